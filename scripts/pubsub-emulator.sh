#!/usr/bin/env bash
# Local Google Cloud Pub/Sub emulator without Docker or gcloud.
#
# Builds and runs dev/pubsub-emulator (a wrapper around Google's in-memory fake
# server cloud.google.com/go/pubsub/v2/pstest) as a background process serving
# plaintext gRPC *and* the HTTP/1.1 JSON REST API (needed by the Rust
# google-cloud-pubsub admin clients) on 127.0.0.1:${PUBSUB_EMULATOR_PORT:-8085}.
# It starts empty; clients create topics/subscriptions via the admin API.
# State is in memory only: `stop` (or a crash) loses all topics and messages.
#
# Usage:
#   scripts/pubsub-emulator.sh start    # build if needed, start in background, wait until gRPC+REST answer;
#                                       # prints the export line on stdout (eval-able)
#   scripts/pubsub-emulator.sh stop     # SIGTERM (SIGKILL after 10 s), remove pid file
#   scripts/pubsub-emulator.sh status   # exit 0 if running and answering, 3 if not running, 1 if unhealthy
#   scripts/pubsub-emulator.sh env      # prints: export PUBSUB_EMULATOR_HOST=127.0.0.1:8085
#   scripts/pubsub-emulator.sh build    # only (re)build the binary
#   scripts/pubsub-emulator.sh logs     # tail -f the log file
#   eval "$(scripts/pubsub-emulator.sh env)"
#
# Environment:
#   PUBSUB_EMULATOR_PORT           port to listen on (default 8085)
#   ECOM_DEV_DIR                   state dir root (default <repo>/.dev); files go to $ECOM_DEV_DIR/pubsub/
#   PUBSUB_EMULATOR_START_TIMEOUT  seconds to wait for the server to answer (default 60)
#   PUBSUB_EMULATOR_ARGS           extra flags for the binary, e.g. "-min-ack-deadline 1s -stream-fanout 1 -v"
#                                  (see dev/pubsub-emulator/main.go; changing them needs stop + start)
#
# Requires: bash, Go (version per dev/pubsub-emulator/go.mod) and access to the
# Go module proxy on the first build.

SERVER=pubsub-emulator
STATE_SUBDIR=pubsub
PROTOCOL=Pub/Sub
PORT_VAR=PUBSUB_EMULATOR_PORT DEFAULT_PORT=8085
TIMEOUT_VAR=PUBSUB_EMULATOR_START_TIMEOUT DEFAULT_TIMEOUT=60
ARGS_VAR=PUBSUB_EMULATOR_ARGS
POLL=0.5
cmd_env() { echo "export PUBSUB_EMULATOR_HOST=$ADDR"; }

# shellcheck source=lib/go-server.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/go-server.sh"
