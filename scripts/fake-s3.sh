#!/usr/bin/env bash
# Local S3-compatible object store for the archive tests, without Docker.
#
# Builds and runs dev/fake-s3 (a wrapper around the Go module
# github.com/johannesboyne/gofakes3 with its in-memory backend, fetched
# through the Go module proxy) as a background process speaking the S3 REST
# protocol over plain HTTP on 127.0.0.1:${FAKE_S3_PORT:-9400}. It starts
# with no buckets (tests create their own); signatures are not checked.
# State is in memory only: `stop` (or a crash) loses every bucket.
#
# Usage:
#   scripts/fake-s3.sh start    # build if needed, start in background, wait until it answers;
#                               # prints the export line on stdout (eval-able)
#   scripts/fake-s3.sh stop     # SIGTERM (SIGKILL after 10 s), remove pid file
#   scripts/fake-s3.sh status   # exit 0 if running and answering, 3 if not running, 1 if unhealthy
#   scripts/fake-s3.sh env      # prints: export ECOM_OBJECT_STORE=http://127.0.0.1:9400
#   scripts/fake-s3.sh build    # only (re)build the binary
#   scripts/fake-s3.sh logs     # tail -f the log file
#
# Environment:
#   FAKE_S3_PORT           port to listen on (default 9400)
#   ECOM_DEV_DIR           state dir root (default <repo>/.dev); files go to $ECOM_DEV_DIR/fake-s3/
#   FAKE_S3_START_TIMEOUT  seconds to wait for the server to answer (default 30)
#   FAKE_S3_ARGS           extra flags for the binary, e.g. "-v" (log every request)
#
# Requires: bash, Go (version per dev/fake-s3/go.mod) and access to the Go
# module proxy on the first build.

SERVER=fake-s3
STATE_SUBDIR=fake-s3
PROTOCOL=S3
PORT_VAR=FAKE_S3_PORT DEFAULT_PORT=9400
TIMEOUT_VAR=FAKE_S3_START_TIMEOUT DEFAULT_TIMEOUT=30
ARGS_VAR=FAKE_S3_ARGS
POLL=0.2
cmd_env() { echo "export ECOM_OBJECT_STORE=http://$ADDR"; }

# shellcheck source=lib/go-server.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/go-server.sh"
