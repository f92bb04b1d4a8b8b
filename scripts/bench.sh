#!/usr/bin/env bash
# `ecom-pipeline bench` against the local servers, in a release build.
#
# Starts Apache Cassandra and the pstest Pub/Sub server when they are not
# running (and stops them afterwards), then runs the bench with the
# arguments given, e.g. `scripts/bench.sh --json bench.json` or
# `scripts/bench.sh --stages log-append,projection --messages 5000`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"

start_service cassandra
start_service pubsub-emulator
export ECOM_CASSANDRA="127.0.0.1:${CASSANDRA_PORT:-9042}"
export PUBSUB_EMULATOR_HOST="127.0.0.1:${PUBSUB_EMULATOR_PORT:-8085}"

# `cargo run`, not ./target/release/…: it honours CARGO_TARGET_DIR.
cargo run --release -q -p ecom-pipeline -- bench "$@"
