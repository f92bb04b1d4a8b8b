#!/usr/bin/env bash
# Local single-node Apache Cassandra 5.0 for development and tests, without Docker.
#
#   scripts/cassandra.sh install   # fetch cassandra-all + deps from Maven Central (cached)
#   scripts/cassandra.sh start     # install if needed, start, wait until CQL answers
#   scripts/cassandra.sh stop      # SIGTERM, then SIGKILL after CASSANDRA_STOP_TIMEOUT
#   scripts/cassandra.sh status    # exit 0 only if running and answering CQL
#   scripts/cassandra.sh wipe      # stop and delete all data (keeps the installed jars)
#
# Needs Java 17 and Maven (install) and Python >= 3.9 (scripts/cql.sh, used for
# the readiness check). Everything lives under $ECOM_DEV_DIR/cassandra
# (default <repo>/.dev/cassandra): lib/, conf/, data/, commitlog/, logs/, ...
#
# Environment (all optional):
#   CASSANDRA_VERSION=5.0.9       cassandra-all version from Maven Central
#   CASSANDRA_PORT=9042           CQL native transport port (127.0.0.1)
#   CASSANDRA_STORAGE_PORT=7000   internode port;  CASSANDRA_JMX_PORT=7199 (local JMX)
#   CASSANDRA_HEAP=1G             -Xms/-Xmx
#   CASSANDRA_START_TIMEOUT=180   seconds;  CASSANDRA_STOP_TIMEOUT=60 seconds
#   CASSANDRA_JAVA_HOME           a Java 17 home (else JAVA_HOME, PATH, /usr/lib/jvm)
#   CASSANDRA_JVM_OPTS            extra JVM options, appended last
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_DIR="${ECOM_DEV_DIR:-$ROOT/.dev}"
[[ "$DEV_DIR" = /* ]] || DEV_DIR="$PWD/$DEV_DIR"   # absolute: paths end up in the yaml and the pid check
DIR="$DEV_DIR/cassandra"
LIB="$DIR/lib"
LOG_DIR="$DIR/logs"
PID_FILE="$DIR/cassandra.pid"
TEMPLATES="$ROOT/dev/cassandra"
CQL="$ROOT/scripts/cql.sh"

VERSION="${CASSANDRA_VERSION:-5.0.9}"
PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
JMX_PORT="${CASSANDRA_JMX_PORT:-7199}"
HEAP="${CASSANDRA_HEAP:-1G}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
STOP_TIMEOUT="${CASSANDRA_STOP_TIMEOUT:-60}"
DATA_DIRS=(data commitlog saved_caches hints cdc_raw triggers logs)

log() { echo "cassandra.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in PORT STORAGE_PORT JMX_PORT START_TIMEOUT STOP_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "CASSANDRA_$v must be a number, got '${!v}'"
done

# One start/stop/install at a time (tests may call start concurrently).
lock() {
  mkdir -p "$DIR"
  exec 8>"$DIR/.lock"
  flock 8 || die "cannot lock $DIR/.lock"
}

# --- Java 17 ----------------------------------------------------------------
java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p'; }

find_java() {
  local c
  for c in ${CASSANDRA_JAVA_HOME:+"$CASSANDRA_JAVA_HOME/bin/java"} \
           ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" \
           /usr/lib/jvm/java-17-*/bin/java; do
    if [[ -x "$c" && "$(java_major "$c")" == 17 ]]; then echo "$c"; return 0; fi
  done
  die "no Java 17 found (Cassandra 5.0 runs on 11 or 17; this script uses 17). Set CASSANDRA_JAVA_HOME."
}

# --- install ----------------------------------------------------------------
cmd_install() {
  local stamp="$LIB/.installed-$VERSION"
  if [[ -f "$stamp" ]]; then log "Cassandra $VERSION already installed in $LIB"; return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  local tmp="$DIR/lib.tmp"
  rm -rf "$tmp"
  log "fetching org.apache.cassandra:cassandra-all:$VERSION + runtime deps (Maven Central, cached in ~/.m2) ..."
  # Includes cassandra-all itself (it is the pom's only dependency). The sed
  # drops the stray ANSI resets Debian's Maven 3.8 prints even with -B -q.
  mvn -B -q -f "$TEMPLATES/pom.xml" -Dcassandra.version="$VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      -DexcludeClassifiers=osx-x86_64,osx-aarch_64,windows-x86_64 2>&1 \
    | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2 \
    || die "maven could not fetch cassandra-all $VERSION (see output above)"
  [[ -f "$tmp/cassandra-all-$VERSION.jar" ]] || die "cassandra-all-$VERSION.jar missing after maven run"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  touch "$stamp"
  log "installed Cassandra $VERSION ($(find "$LIB" -name '*.jar' | wc -l) jars) in $LIB"
}

# --- process / readiness helpers ---------------------------------------------
# Prints the pid if our CassandraDaemon (for this $DIR) is alive.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  # Guard against pid reuse: the process must be our daemon.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "CassandraDaemon" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/" || return 1
  echo "$pid"
}

# The CQL port the running node was started with (it may differ from $CASSANDRA_PORT now).
use_running_port() {
  local p
  p="$(sed -n 's/^native_transport_port: *//p' "$DIR/conf/cassandra.yaml" 2>/dev/null)"
  [[ "$p" =~ ^[0-9]+$ ]] && PORT="$p"
  return 0
}

# Alive = exists and is not a zombie waiting to be reaped by its (non-us) parent.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# A real CQL round trip; prints the server's release_version.
cql_version() {
  port_open || return 1
  local out
  out="$(CASSANDRA_PORT="$PORT" "$CQL" --connect-timeout=5 --request-timeout=10 \
         -e "SELECT release_version FROM system.local" 2>/dev/null)" || return 1
  # Output: header, dashes, value, (1 rows). Take the line after the dashes.
  awk 'f { gsub(/ /, ""); print; exit } /^-+$/ { f = 1 }' <<<"$out" | grep . || return 1
}

show_log_tail() {
  local f
  for f in "$LOG_DIR/system.log" "$LOG_DIR/stdout.log"; do
    [[ -s "$f" ]] || continue
    log "last 50 lines of $f:"
    tail -n 50 "$f" >&2
  done
}

wait_ready() {
  local pid="$1" start=$SECONDS v
  log "waiting up to ${START_TIMEOUT}s for CQL on 127.0.0.1:$PORT ..."
  while (( SECONDS - start < START_TIMEOUT )); do
    if ! alive "$pid"; then
      rm -f "$PID_FILE"
      show_log_tail
      die "Cassandra (pid $pid) exited during startup"
    fi
    if v="$(cql_version)"; then
      log "Cassandra $v is up on 127.0.0.1:$PORT (pid $pid, $((SECONDS - start))s)"
      return 0
    fi
    sleep 1
  done
  show_log_tail
  die "Cassandra did not answer CQL within ${START_TIMEOUT}s (pid $pid still running; 'scripts/cassandra.sh stop' kills it)"
}

# --- start ------------------------------------------------------------------
cmd_start() {
  lock
  local pid v
  if pid="$(running_pid)"; then
    use_running_port
    if v="$(cql_version)"; then log "already running (pid $pid, Cassandra $v) on 127.0.0.1:$PORT"; return 0; fi
    wait_ready "$pid"; return 0
  fi
  if port_open; then
    if v="$(cql_version)"; then
      log "a Cassandra ($v) not started by this script already answers on 127.0.0.1:$PORT; using it"
      return 0
    fi
    die "port $PORT is in use by something that does not answer CQL"
  fi

  local java; java="$(find_java)"
  cmd_install

  # Scratch dirs, config rendered from the templates in dev/cassandra/.
  mkdir -p "$DIR/conf"
  local d; for d in "${DATA_DIRS[@]}"; do mkdir -p "$DIR/$d"; done
  sed -e "s|@DIR@|$DIR|g" -e "s|@PORT@|$PORT|g" -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" \
      "$TEMPLATES/cassandra.yaml.in" >"$DIR/conf/cassandra.yaml"
  cp "$TEMPLATES/logback.xml" "$DIR/conf/logback.xml"

  local jamm; jamm="$(find "$LIB" -maxdepth 1 -name 'jamm-*.jar' | head -n1)"
  [[ -n "$jamm" ]] || die "jamm jar missing in $LIB (re-run: rm -rf $LIB && $0 install)"
  local opts; mapfile -t opts < <(grep -E '^-' "$TEMPLATES/jvm17.options")
  opts+=(
    "-Xms$HEAP" "-Xmx$HEAP"
    "-javaagent:$jamm"
    "-XX:HeapDumpPath=$LOG_DIR" "-XX:ErrorFile=$LOG_DIR/hs_err_%p.log"
    "-Dcassandra.config=file://$DIR/conf/cassandra.yaml"
    "-Dcassandra.storagedir=$DIR"
    "-Dcassandra.logdir=$LOG_DIR"
    "-Dcassandra.triggers_dir=$DIR/triggers"
    "-Dlogback.configurationFile=file://$DIR/conf/logback.xml"
    "-Dcassandra.jmx.local.port=$JMX_PORT"   # JMX bound to localhost only (nodetool)
    "-Dcassandra-foreground=yes"              # keep stdout/stderr -> logs/stdout.log
  )
  # Extra JVM options from the environment (word-split on purpose).
  # shellcheck disable=SC2206
  opts+=(${CASSANDRA_JVM_OPTS:-})

  log "starting Cassandra $VERSION (java: $java, heap $HEAP, data in $DIR)"
  # setsid + nohup: the daemon survives this shell and its terminal.
  # fd 8 (our lock) must not leak into the daemon, or the lock is held forever.
  (exec 8>&-; cd "$DIR" && exec setsid nohup "$java" "${opts[@]}" -cp "$LIB/*" \
     org.apache.cassandra.service.CassandraDaemon >>"$LOG_DIR/stdout.log" 2>&1 </dev/null) &
  pid=$!
  echo "$pid" >"$PID_FILE"
  # Install the cqlsh venv (first run only) while the JVM boots.
  if ! "$CQL" --version >/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true; rm -f "$PID_FILE"
    die "could not set up cqlsh (scripts/cql.sh); Cassandra stopped again"
  fi
  wait_ready "$pid"
}

# --- stop -------------------------------------------------------------------
cmd_stop() {
  lock
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    if port_open; then log "not running (but something else listens on 127.0.0.1:$PORT; not touching it)"
    else log "not running"; fi
    return 0
  fi
  log "stopping Cassandra (pid $pid, SIGTERM) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local start=$SECONDS
  while alive "$pid"; do
    if (( SECONDS - start >= STOP_TIMEOUT )); then
      log "still alive after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in {1..20}; do alive "$pid" || break; sleep 0.5; done
      alive "$pid" && die "pid $pid survived SIGKILL"
      break
    fi
    sleep 0.5
  done
  rm -f "$PID_FILE"
  log "stopped ($((SECONDS - start))s)"
}

# --- status / wipe ----------------------------------------------------------
cmd_status() {
  local pid v
  if pid="$(running_pid)"; then
    use_running_port
    if v="$(cql_version)"; then echo "running (pid $pid), Cassandra $v answering CQL on 127.0.0.1:$PORT"; return 0; fi
    echo "running (pid $pid) but not answering CQL on 127.0.0.1:$PORT (starting up?)"; return 1
  fi
  if v="$(cql_version)"; then echo "not started by this script, but Cassandra $v answers on 127.0.0.1:$PORT"; return 0; fi
  echo "not running"; return 1
}

cmd_wipe() {
  cmd_stop
  local d; for d in "${DATA_DIRS[@]}"; do rm -rf "${DIR:?}/$d"; done
  log "wiped data under $DIR (installed jars in $LIB kept)"
}

case "${1:-}" in
  install) lock; cmd_install ;;
  start)   cmd_start ;;
  stop)    cmd_stop ;;
  status)  cmd_status ;;
  wipe)    cmd_wipe ;;
  *) echo "usage: $0 {install|start|stop|status|wipe}" >&2; exit 2 ;;
esac
