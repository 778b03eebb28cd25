#!/usr/bin/env bash
# Development services for Troupe: Redis >= 7 and PostgreSQL >= 15 on loopback.
#
#   scripts/dev.sh up       make both servers answer at the configured URLs
#   scripts/dev.sh down     stop the private servers this script started
#   scripts/dev.sh status   say what answers where
#   scripts/dev.sh run      up, migrate, release build, serve        (README command 1)
#   scripts/dev.sh test     up, then the whole test suite and the API contract (README command 2)
#   scripts/dev.sh contract up, then the API contract alone (schemathesis over the OpenAPI document)
#   scripts/dev.sh bench [drain|timers|saga|ws]   up, then a benchmark (BENCHMARKS.md)
#   scripts/dev.sh demo [--rate N]   orders against the running service (scripts/dev.sh run)
#
# URLs come from TROUPE__REDIS__URL and TROUPE__DATABASE__URL (defaults below). A server that
# already answers there is used as it is; otherwise a private one is started from the system's
# binaries with its data, logs and pid file under .dev/ (installing the Debian packages
# redis-server and postgresql first when they are missing and we are root). Redis keeps an
# append-only file (fsync every second); Postgres keeps fsync and synchronous_commit on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/.dev"
REDIS_URL="${TROUPE__REDIS__URL:-redis://127.0.0.1:6379}"
DATABASE_URL="${TROUPE__DATABASE__URL:-postgres://troupe:troupe@127.0.0.1:5432/troupe}"

say() { printf 'dev.sh: %s\n' "$*"; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

# --- URL parsing ----------------------------------------------------------------------------
[[ "$REDIS_URL" =~ ^redis://([^@/]*@)?([^:/]+)(:([0-9]+))?(/[0-9]*)?$ ]] \
  || die "cannot parse TROUPE__REDIS__URL=$REDIS_URL (expected redis://host:port)"
REDIS_HOST="${BASH_REMATCH[2]}"; REDIS_PORT="${BASH_REMATCH[4]:-6379}"
[[ "$DATABASE_URL" =~ ^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?/([^?]+) ]] \
  || die "cannot parse TROUPE__DATABASE__URL=$DATABASE_URL (expected postgres://user:password@host:port/db)"
PG_USER="${BASH_REMATCH[2]}"; PG_PASSWORD="${BASH_REMATCH[4]}"; PG_HOST="${BASH_REMATCH[5]}"
PG_PORT="${BASH_REMATCH[7]:-5432}"; PG_DB="${BASH_REMATCH[8]}"

is_loopback() { [[ "$1" == 127.* || "$1" == localhost || "$1" == "::1" ]]; }

# --- packages -------------------------------------------------------------------------------
pg_bindir() {
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/initdb" ]] || continue
    local v="${dir#/usr/lib/postgresql/}"; v="${v%%/*}"
    (( v >= 15 )) && best="$dir"
  done
  [[ -n "$best" ]] && printf '%s\n' "$best"
}

ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
  { pg_bindir >/dev/null && command -v psql >/dev/null; } || missing+=(postgresql)
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}"
  fi
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || die "apt-get install ${missing[*]} failed"
  # Debian's packages start their own instances where an init system runs; ours are private.
  service redis-server stop >/dev/null 2>&1 || true
  service postgresql stop >/dev/null 2>&1 || true
}

# --- Redis ----------------------------------------------------------------------------------
redis_answers() { redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; }

redis_up() {
  if redis_answers; then
    say "redis answers at $REDIS_URL"
  else
    is_loopback "$REDIS_HOST" || die "redis at $REDIS_URL does not answer and is not local"
    mkdir -p "$DEV/redis"
    say "starting private redis on port $REDIS_PORT (data in .dev/redis)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DEV/redis" \
      --appendonly yes --appendfsync everysec --save "" \
      --daemonize yes --pidfile "$DEV/redis.pid" --logfile "$DEV/redis.log"
    for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    redis_answers || { tail -n 20 "$DEV/redis.log" >&2; die "redis did not start"; }
  fi
  local version; version="$(redis-cli -u "$REDIS_URL" info server | sed -n 's/^redis_version:\([0-9]*\).*/\1/p')"
  (( ${version:-0} >= 7 )) || die "redis at $REDIS_URL is version ${version:-?}; 7 or newer is needed"
}

# --- Postgres -------------------------------------------------------------------------------
pg_answers() {
  PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=2 psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
    -d "$1" -tAc 'SELECT 1' >/dev/null 2>&1
}

# Runs a command as the owner of the private cluster (initdb and postgres refuse to run as root).
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_data_dir() {
  if [[ -L "$DEV/postgres" || -d "$DEV/postgres" ]]; then printf '%s\n' "$DEV/postgres"; return; fi
  mkdir -p "$DEV"
  if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$DEV"; then
    # The checkout is not reachable for the postgres user (e.g. under /root): keep the data
    # elsewhere and link it into .dev/.
    local outside; outside="/var/tmp/troupe-dev-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)/postgres"
    mkdir -p "$(dirname "$outside")"
    ln -sfn "$outside" "$DEV/postgres"
  fi
  printf '%s\n' "$DEV/postgres"
}

pg_up() {
  if pg_answers postgres || pg_answers "$PG_DB"; then
    say "postgres answers at $PG_HOST:$PG_PORT"
  elif PGCONNECT_TIMEOUT=2 pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
    die "a postgres server answers at $PG_HOST:$PG_PORT but not as user $PG_USER; fix TROUPE__DATABASE__URL or create the role"
  else
    is_loopback "$PG_HOST" || die "postgres at $PG_HOST:$PG_PORT does not answer and is not local"
    local bin data; bin="$(pg_bindir)" || die "no PostgreSQL >= 15 binaries found"
    data="$(pg_data_dir)"
    local real; real="$(readlink -f "$data")"
    if [[ ! -f "$real/PG_VERSION" ]]; then
      say "initialising private postgres cluster in $data"
      mkdir -p "$real"
      local pwfile; pwfile="$(mktemp)"; printf '%s\n' "$PG_PASSWORD" >"$pwfile"
      if [[ $(id -u) -eq 0 ]]; then chown postgres: "$real" "$pwfile"; fi
      as_pg "$bin/initdb" -D "$real" -U "$PG_USER" --pwfile="$pwfile" --auth=scram-sha-256 \
        -E UTF8 >"$DEV/initdb.log" 2>&1 || { rm -f "$pwfile"; tail -n 20 "$DEV/initdb.log" >&2; die "initdb failed"; }
      rm -f "$pwfile"
      cat >>"$real/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
fsync = on
synchronous_commit = on
max_connections = 400
shared_buffers = 256MB
CONF
    fi
    # The log lives beside the data, where the server's user can write.
    local log; log="$(dirname "$real")/postgres.log"
    say "starting private postgres on port $PG_PORT (log: $log)"
    touch "$log"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$log"; fi
    # -p: a cluster initialised for another URL still listens where this one points.
    as_pg "$bin/pg_ctl" -D "$real" -l "$log" -o "-p $PG_PORT" -w -t 30 start >/dev/null \
      || { tail -n 20 "$log" >&2; die "postgres did not start"; }
    head -n 1 "$real/postmaster.pid" >"$DEV/postgres.pid"
  fi
  if ! pg_answers "$PG_DB"; then
    say "creating database $PG_DB"
    PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE \"$PG_DB\"" \
      || die "cannot create database $PG_DB"
  fi
  local version; version="$(PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tAc 'SHOW server_version_num')"
  (( version >= 150000 )) || die "postgres at $PG_HOST:$PG_PORT is too old ($version); 15 or newer is needed"
}

# --- commands -------------------------------------------------------------------------------
up() {
  ensure_packages
  redis_up
  pg_up
}

down() {
  if [[ -f "$DEV/redis.pid" ]]; then
    local pid; pid="$(cat "$DEV/redis.pid")"
    say "stopping private redis"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$DEV/redis.pid"
  fi
  if [[ -f "$DEV/postgres.pid" ]]; then
    say "stopping private postgres"
    local bin; bin="$(pg_bindir)"
    as_pg "$bin/pg_ctl" -D "$(readlink -f "$DEV/postgres")" -m fast -w stop >/dev/null 2>&1 \
      || kill "$(cat "$DEV/postgres.pid")" 2>/dev/null || true
    rm -f "$DEV/postgres.pid"
  fi
}

status() {
  local mine
  if command -v redis-cli >/dev/null && redis_answers; then
    mine=""; [[ -f "$DEV/redis.pid" ]] && mine=" (private, pid $(cat "$DEV/redis.pid"))"
    say "redis: answers at $REDIS_URL$mine"
  else
    say "redis: nothing answers at $REDIS_URL"
  fi
  if command -v psql >/dev/null && pg_answers "$PG_DB"; then
    mine=""; [[ -f "$DEV/postgres.pid" ]] && mine=" (private, pid $(cat "$DEV/postgres.pid"))"
    say "postgres: answers at $PG_HOST:$PG_PORT/$PG_DB$mine"
  else
    say "postgres: nothing answers at $PG_HOST:$PG_PORT/$PG_DB"
  fi
}

# The API contract: the service on a fresh database, requests generated from its OpenAPI
# document by a property-based tester (schemathesis), every response checked against it.
SCHEMATHESIS_VERSION="4.32.5"
contract() {
  local venv="$DEV/venv" bin="$ROOT/target/debug/troupe"
  if [[ ! -x "$venv/bin/schemathesis" ]] || ! "$venv/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    say "installing schemathesis $SCHEMATHESIS_VERSION in $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
      || die "cannot install schemathesis (PyPI unreachable?)"
  fi
  [[ -x "$bin" ]] || cargo build --locked
  local db="${PG_DB}_contract"
  PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
    -c "CREATE DATABASE \"$db\"" >/dev/null || die "cannot create database $db"
  local port; port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  local log="$DEV/contract-service.log"
  say "contract: serving on port $port (log: $log)"
  TROUPE_ENV= TROUPE__HTTP__PORT="$port" TROUPE__DATABASE__URL="${DATABASE_URL%/*}/$db" \
    TROUPE__REDIS__KEY_PREFIX="contract-$$:" "$bin" serve >"$log" 2>&1 &
  local pid=$!
  local status=0
  for _ in $(seq 300); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health/ready', timeout=1)" \
      >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "the service did not start"; }
    sleep 0.1
  done
  (cd "$ROOT/tests/contract" && SCHEMATHESIS_HOOKS=hooks "$venv/bin/schemathesis" \
      --config-file schemathesis.toml run "http://127.0.0.1:$port/api-docs/openapi.json" \
      --checks all --exclude-checks ensure_resource_availability --exclude-path /ws \
      --max-examples "${CONTRACT_EXAMPLES:-50}" --workers 2 --seed "${CONTRACT_SEED:-1}") || status=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true
  return "$status"
}

export_urls() {
  export TROUPE__REDIS__URL="$REDIS_URL" TROUPE__DATABASE__URL="$DATABASE_URL"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  run)
    up; export_urls; cd "$ROOT"
    cargo build --release --locked
    target/release/troupe migrate
    exec target/release/troupe serve "$@"
    ;;
  test)
    up; export_urls; cd "$ROOT"
    export TROUPE_ENV=test
    cargo test --locked --all-targets "$@"
    cargo test --locked --doc
    contract
    ;;
  contract)
    up; export_urls; cd "$ROOT"
    contract
    ;;
  bench)
    up; export_urls; cd "$ROOT"
    exec scripts/bench.sh "$@"
    ;;
  demo)
    cd "$ROOT"
    exec cargo run --release --locked --example shop_demo -- "$@"
    ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
