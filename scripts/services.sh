# Sourced by test.sh and bench.sh: starts the local servers a command needs
# and stops, on exit, the ones it started (servers already running are used
# and left alone). Expects ROOT to be the repository root.

log() { echo "$(basename "$0"): $*" >&2; }

started=()
stop_started_services() {
  local rc=$?
  for svc in "${started[@]}"; do
    log "stopping $svc"
    "$ROOT/scripts/$svc.sh" stop || log "could not stop $svc cleanly"
  done
  exit "$rc"
}
trap stop_started_services EXIT

start_service() {
  local svc=$1
  if "$ROOT/scripts/$svc.sh" status >/dev/null 2>&1; then
    log "$svc already running; using it"
  else
    log "starting $svc"
    "$ROOT/scripts/$svc.sh" start || { log "FAILED to start $svc: it is needed, so this stops here"; exit 1; }
    started+=("$svc")
  fi
}
