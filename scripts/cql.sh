#!/usr/bin/env bash
# CQL shell against the local dev Cassandra (scripts/cassandra.sh).
#
#   scripts/cql.sh                                   # interactive
#   scripts/cql.sh -e "SELECT count(*) FROM ecom_store.orders_payments_facts"
#   scripts/cql.sh -f schema.cql
#
# Arguments are passed to cqlsh unchanged. Target: ${CASSANDRA_HOST:-127.0.0.1}
# port ${CASSANDRA_PORT:-9042}. On first use cqlsh (PyPI, pinned) is installed
# into a venv at $ECOM_DEV_DIR/venv (default <repo>/.dev/venv); later runs reuse it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_DIR="${ECOM_DEV_DIR:-$ROOT/.dev}"
[[ "$DEV_DIR" = /* ]] || DEV_DIR="$PWD/$DEV_DIR"
VENV="$DEV_DIR/venv"
# Pinned together: cqlsh 6.2.x is the standalone Apache cqlsh for Cassandra 5.0.
CQLSH_PIP_SPEC=(cqlsh==6.2.2 cassandra-driver==3.30.1)
STAMP="$VENV/.ecom-cqlsh-6.2.2"

die() { echo "cql.sh: $*" >&2; exit 1; }

ensure_venv() {
  [[ -f "$STAMP" ]] && return 0
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || die "$py not found (need Python >= 3.9; set PYTHON=...)"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "$py is too old (need Python >= 3.9)"
  mkdir -p "$DEV_DIR"
  # Serialise the first install when several processes start at once.
  exec 9>"$DEV_DIR/.venv.lock"
  flock 9 || die "cannot lock $DEV_DIR/.venv.lock"
  if [[ ! -f "$STAMP" ]]; then
    echo "cql.sh: installing ${CQLSH_PIP_SPEC[*]} into $VENV ..." >&2
    rm -rf "$VENV"
    "$py" -m venv "$VENV" \
      || die "python venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${CQLSH_PIP_SPEC[@]}" \
      || die "pip install ${CQLSH_PIP_SPEC[*]} failed"
    touch "$STAMP"
  fi
  exec 9>&-
}

ensure_venv
# cqlsh reads its target from these; explicit host/port arguments still win.
export CQLSH_HOST="${CASSANDRA_HOST:-127.0.0.1}"
export CQLSH_PORT="${CASSANDRA_PORT:-9042}"
# Same as "$VENV/bin/cqlsh" "$@", minus one line: cqlsh 6.2.2 prints "WARNING: cqlsh
# was built against 5.0.0, but this server is 5.0.x" on STDOUT for every patch
# release, which pollutes output that scripts and tests parse. Only that check is
# switched off; everything else is stock cqlsh.
exec "$VENV/bin/python" -c '
import sys
from cqlshlib import cqlshmain
cqlshmain.Shell.check_build_versions = lambda self: None
sys.argv[0] = "cqlsh"
sys.exit(cqlshmain.main(sys.argv[1:], ""))
' "$@"
