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

set -euo pipefail

# ---- paths and settings ------------------------------------------------------
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
SRC_DIR="$REPO_ROOT/dev/fake-s3"

DEV_DIR="${ECOM_DEV_DIR:-$REPO_ROOT/.dev}"
[[ "$DEV_DIR" = /* ]] || DEV_DIR="$PWD/$DEV_DIR"   # absolute, so the pid check below can match the path
STATE_DIR="$DEV_DIR/fake-s3"
BIN="$STATE_DIR/fake-s3"
PID_FILE="$STATE_DIR/fake-s3.pid"
ADDR_FILE="$STATE_DIR/fake-s3.addr"   # address the running instance was started on
LOG_FILE="$STATE_DIR/fake-s3.log"

HOST="127.0.0.1"
PORT="${FAKE_S3_PORT:-9400}"
ADDR="$HOST:$PORT"
START_TIMEOUT="${FAKE_S3_START_TIMEOUT:-30}"
EXTRA_ARGS="${FAKE_S3_ARGS:-}"

# ---- helpers -----------------------------------------------------------------
log() { printf 'fake-s3.sh: %s\n' "$*" >&2; }
die() { printf 'fake-s3.sh: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65536 )) \
    || die "FAKE_S3_PORT must be a port number, got '$PORT'"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] \
    || die "FAKE_S3_START_TIMEOUT must be a whole number of seconds, got '$START_TIMEOUT'"

# Print the pid from the pid file if that process is alive and is our binary;
# otherwise print nothing (and remove a stale pid file).
running_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && ps -p "$pid" -o args= 2>/dev/null | grep -qF -- "$BIN"; then
        printf '%s\n' "$pid"
    else
        log "removing stale pid file $PID_FILE (pid '${pid}' is not a running fake-s3)"
        rm -f "$PID_FILE"
    fi
}

# True if the server on $1 (host:port) answers an S3 ListBuckets.
answers() { "$BIN" -ping "$1" >/dev/null 2>&1; }

# Rebuild the binary if it is missing or any source file is newer than it.
build() {
    [[ -f "$SRC_DIR/go.mod" ]] || die "fake-s3 sources not found at $SRC_DIR"
    mkdir -p "$STATE_DIR"     # <repo>/.dev is git-ignored by the repo's .gitignore

    if [[ -x "$BIN" ]] && [[ -z "$(find "$SRC_DIR" -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -newer "$BIN" -print -quit)" ]]; then
        return 0              # up to date
    fi
    command -v go >/dev/null 2>&1 \
        || die "'go' not found in PATH; install Go (see $SRC_DIR/go.mod for the version)"
    log "building $BIN (first build downloads Go modules, may take a minute)"
    # Build to a temp name and rename, so an interrupted build never leaves a
    # half-written binary that looks up to date.
    if ! (cd "$SRC_DIR" && go build -buildvcs=false -trimpath -o "$BIN.tmp" .); then
        rm -f "$BIN.tmp"
        die "go build failed in $SRC_DIR"
    fi
    mv -f "$BIN.tmp" "$BIN"
}

# ---- commands ----------------------------------------------------------------
cmd_start() {
    build

    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        if answers "$ADDR"; then
            log "already running (pid $pid) on $ADDR"
            cmd_env
            exit 0
        fi
        local running_addr
        running_addr="$(cat "$ADDR_FILE" 2>/dev/null || echo unknown)"
        if [[ "$running_addr" != "$ADDR" ]]; then
            die "a fake-s3 from $STATE_DIR is already running (pid $pid) on $running_addr, not $ADDR; run '$0 stop' first (one instance per ECOM_DEV_DIR)"
        fi
        die "pid $pid from $PID_FILE is running but $ADDR does not answer; see $LOG_FILE or run '$0 stop'"
    fi
    # Something else (another checkout's server) already on the port?
    if answers "$ADDR"; then
        die "an S3 server already answers on $ADDR but was not started from $STATE_DIR; stop it or set FAKE_S3_PORT"
    fi

    log "starting on $ADDR (log: $LOG_FILE)"
    local log_offset=0   # print only this run's log lines on failure
    [[ -f "$LOG_FILE" ]] && log_offset="$(wc -c < "$LOG_FILE")"
    printf '\n==== %s start %s ====\n' "$(date '+%F %T')" "$ADDR" >> "$LOG_FILE"
    # shellcheck disable=SC2086  # EXTRA_ARGS is intentionally word-split
    nohup "$BIN" -addr "$ADDR" $EXTRA_ARGS >> "$LOG_FILE" 2>&1 < /dev/null &
    pid=$!
    printf '%s\n' "$pid" > "$PID_FILE"
    printf '%s\n' "$ADDR" > "$ADDR_FILE"

    # Wait until the server answers a real S3 call, or it dies, or we time out.
    local deadline=$(( SECONDS + START_TIMEOUT ))
    until answers "$ADDR"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE" "$ADDR_FILE"
            log "fake-s3 process $pid exited during startup; log of this run:"
            tail -c +"$(( log_offset + 1 ))" "$LOG_FILE" | tail -n 30 >&2 || true
            die "failed to start fake-s3 on $ADDR"
        fi
        if (( SECONDS >= deadline )); then
            log "fake-s3 did not answer on $ADDR within ${START_TIMEOUT}s; log of this run:"
            tail -c +"$(( log_offset + 1 ))" "$LOG_FILE" | tail -n 30 >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$PID_FILE" "$ADDR_FILE"
            die "timed out waiting for fake-s3 on $ADDR"
        fi
        sleep 0.2
    done
    log "running (pid $pid) on $ADDR"
    cmd_env
}

cmd_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        log "not running"
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for (( i = 0; i < 100; i++ )); do          # up to 10 s for a clean exit
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not exit after SIGTERM in 10s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE" "$ADDR_FILE"
    log "stopped"
}

cmd_status() {
    local pid addr
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        # Like pubsub-emulator.sh: a server another checkout started is
        # usable (test.sh then uses it and leaves it alone). Asking it needs
        # our ping client, so build it if this checkout has none yet.
        if build && answers "$ADDR"; then
            echo "fake-s3: not started from $STATE_DIR, but an S3 server answers on $ADDR"
            exit 0
        fi
        echo "fake-s3: not running (state dir $STATE_DIR)"
        exit 3
    fi
    addr="$(cat "$ADDR_FILE" 2>/dev/null || echo "$ADDR")"   # where it was started
    if [[ -x "$BIN" ]] && answers "$addr"; then
        echo "fake-s3: running, pid $pid, $addr, log $LOG_FILE"
        exit 0
    fi
    echo "fake-s3: pid $pid alive but $addr does not answer S3 requests; see $LOG_FILE"
    exit 1
}

cmd_env() {
    echo "export ECOM_OBJECT_STORE=http://$ADDR"
}

cmd_logs() {
    [[ -f "$LOG_FILE" ]] || die "no log file at $LOG_FILE"
    exec tail -n 50 -f "$LOG_FILE"
}

case "${1:-}" in
    start)  cmd_start ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    env)    cmd_env ;;
    build)  build; log "binary: $BIN" ;;
    logs)   cmd_logs ;;
    -h|--help|help) usage ;;
    *)      log "unknown or missing command '${1:-}'"; usage ;;
esac
