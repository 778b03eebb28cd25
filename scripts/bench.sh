#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md: `drain` (the default: the hand-written baseline consumer and
# Troupe on the same load in the same run), `timers` (timer lateness, idle and under load) or
# `saga` (orders through the whole shop: throughput and latency) or `ws` (WebSocket: POST to
# terminal notification, and fan-out to 5,000 clients).
# Expects Redis and Postgres up (scripts/dev.sh bench starts them) and the URLs in
# TROUPE__REDIS__URL / TROUPE__DATABASE__URL. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:-drain}"
case "$bench" in
  drain|timers|saga|ws) ;;
  *) echo "bench.sh: unknown benchmark $bench (drain, timers, saga or ws)" >&2; exit 2 ;;
esac
cargo build --release --locked --bin troupe
# Builds the bench and, with it, the `troupe` binary it runs (profile `bench` = `release`).
cargo bench --locked --bench "$bench" --no-run
# Say what is being measured: the sources as they are now, after the build (read-only git
# calls: no index refresh, no lock). In a checkout edited meanwhile, this is only a snapshot.
if commit="$(git --no-optional-locks rev-parse --short HEAD 2>/dev/null)"; then
  changed="$(git --no-optional-locks status --porcelain -- src migrations Cargo.toml Cargo.lock \
    | awk '{print $NF}' | paste -sd' ')"
  printf 'bench.sh: sources at %s%s\n' "$commit" "${changed:+ with uncommitted changes in: $changed}"
fi
cargo bench --locked --bench "$bench"
