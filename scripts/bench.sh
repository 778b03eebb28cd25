#!/usr/bin/env bash
# The drain benchmark of BENCHMARKS.md. Expects Redis and Postgres up (scripts/dev.sh bench
# starts them) and the URLs in TROUPE__REDIS__URL / TROUPE__DATABASE__URL.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin troupe
cargo bench --locked --bench drain
