#!/usr/bin/env bash
# The whole test suite, as the README and CI run it.
#
# Starts the real services the tests need (Apache Cassandra 5.0 from Maven
# Central, Google's pstest Pub/Sub fake, gofakes3 as an S3-compatible object
# store for the archive), exports where they are, then runs
# formatting, clippy and every test of the workspace. Tests that need a
# service are told it is required (ECOM_REQUIRE_*=1): if a service is missing
# they fail, they never skip. Services this script started are stopped on
# exit; services that were already running are left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"

start_service cassandra
start_service pubsub-emulator
start_service fake-s3

export ECOM_CASSANDRA="127.0.0.1:${CASSANDRA_PORT:-9042}"
export PUBSUB_EMULATOR_HOST="127.0.0.1:${PUBSUB_EMULATOR_PORT:-8085}"
export ECOM_REQUIRE_CASSANDRA=1
export ECOM_REQUIRE_PUBSUB=1
# The archive tests' S3 endpoint (they create a bucket per test and pass
# the AWS_* settings to what they run; nothing else reads this).
export ECOM_OBJECT_STORE="http://127.0.0.1:${FAKE_S3_PORT:-9400}"
export ECOM_REQUIRE_OBJECT_STORE=1

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace --no-fail-fast
