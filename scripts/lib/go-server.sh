# Sourced by the scripts that run one of our small Go servers in the
# background (scripts/pubsub-emulator.sh, scripts/fake-s3.sh): build it from
# dev/<name>/, start it, wait until it answers, stop it, report its status.
# One copy of the pid-file, readiness and log handling for every such server.
#
# The sourcing script sets, then sources this file (which dispatches "$1"):
#   SERVER        its name: state files, binary and messages (`fake-s3`)
#   STATE_SUBDIR  directory under $ECOM_DEV_DIR (default <repo>/.dev)
#   PROTOCOL      what the server speaks, for messages (`S3`, `Pub/Sub`)
#   PORT_VAR, DEFAULT_PORT, TIMEOUT_VAR, DEFAULT_TIMEOUT, ARGS_VAR
#                 the names of its environment variables and their defaults
#   POLL          seconds between readiness checks while starting
#   cmd_env()     prints the export line clients need
# The binary must take `-addr host:port` and `-ping host:port` (exit 0 when
# a real request to that address succeeds).

set -euo pipefail

# ---- paths and settings ------------------------------------------------------
LIB_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "$LIB_DIR/../.." && pwd)"
SRC_DIR="$REPO_ROOT/dev/$SERVER"

DEV_DIR="${ECOM_DEV_DIR:-$REPO_ROOT/.dev}"
[[ "$DEV_DIR" = /* ]] || DEV_DIR="$PWD/$DEV_DIR"   # absolute, so the pid check below can match the path
STATE_DIR="$DEV_DIR/$STATE_SUBDIR"
BIN="$STATE_DIR/$SERVER"
PID_FILE="$STATE_DIR/$SERVER.pid"
ADDR_FILE="$STATE_DIR/$SERVER.addr"   # address the running instance was started on
LOG_FILE="$STATE_DIR/$SERVER.log"

HOST="127.0.0.1"
PORT="${!PORT_VAR:-$DEFAULT_PORT}"
ADDR="$HOST:$PORT"
START_TIMEOUT="${!TIMEOUT_VAR:-$DEFAULT_TIMEOUT}"
EXTRA_ARGS="${!ARGS_VAR:-}"

# ---- helpers -----------------------------------------------------------------
log() { printf '%s.sh: %s\n' "$SERVER" "$*" >&2; }
die() { printf '%s.sh: ERROR: %s\n' "$SERVER" "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65536 )) \
    || die "$PORT_VAR must be a port number, got '$PORT'"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] \
    || die "$TIMEOUT_VAR must be a whole number of seconds, got '$START_TIMEOUT'"

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
        log "removing stale pid file $PID_FILE (pid '${pid}' is not a running $SERVER)"
        rm -f "$PID_FILE"
    fi
}

# True if the server on $1 (host:port) answers a real request (the binary's
# own -ping client).
answers() { "$BIN" -ping "$1" >/dev/null 2>&1; }

# Rebuild the binary if it is missing or any source file is newer than it.
build() {
    [[ -f "$SRC_DIR/go.mod" ]] || die "$SERVER sources not found at $SRC_DIR"
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
            die "a $SERVER from $STATE_DIR is already running (pid $pid) on $running_addr, not $ADDR; run '$0 stop' first (one instance per ECOM_DEV_DIR)"
        fi
        die "pid $pid from $PID_FILE is running but $ADDR does not answer; see $LOG_FILE or run '$0 stop'"
    fi
    # Something else (another checkout's server) already on the port?
    if answers "$ADDR"; then
        die "a server answering $PROTOCOL requests already listens on $ADDR but was not started from $STATE_DIR; stop it or set $PORT_VAR"
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

    # Wait until the server answers a real request, or it dies, or we time out.
    local deadline=$(( SECONDS + START_TIMEOUT ))
    until answers "$ADDR"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE" "$ADDR_FILE"
            log "$SERVER process $pid exited during startup; log of this run:"
            tail -c +"$(( log_offset + 1 ))" "$LOG_FILE" | tail -n 30 >&2 || true
            die "failed to start $SERVER on $ADDR"
        fi
        if (( SECONDS >= deadline )); then
            log "$SERVER did not answer on $ADDR within ${START_TIMEOUT}s; log of this run:"
            tail -c +"$(( log_offset + 1 ))" "$LOG_FILE" | tail -n 30 >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$PID_FILE" "$ADDR_FILE"
            die "timed out waiting for $SERVER on $ADDR"
        fi
        sleep "$POLL"
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
        # Like cassandra.sh: a server another checkout started is usable
        # (test.sh and bench.sh then use it and leave it alone). Asking it
        # needs our ping client, so build it if this checkout has none yet.
        if build && answers "$ADDR"; then
            echo "$SERVER: not started from $STATE_DIR, but a server answering $PROTOCOL requests listens on $ADDR"
            exit 0
        fi
        echo "$SERVER: not running (state dir $STATE_DIR)"
        exit 3
    fi
    addr="$(cat "$ADDR_FILE" 2>/dev/null || echo "$ADDR")"   # where it was started
    if [[ -x "$BIN" ]] && answers "$addr"; then
        echo "$SERVER: running, pid $pid, $addr, log $LOG_FILE"
        exit 0
    fi
    echo "$SERVER: pid $pid alive but $addr does not answer $PROTOCOL requests; see $LOG_FILE"
    exit 1
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
