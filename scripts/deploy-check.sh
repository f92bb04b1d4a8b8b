#!/usr/bin/env bash
# Checks the deployment files without a Docker engine or a cluster:
#
#   scripts/deploy-check.sh            # check this checkout's files
#   scripts/deploy-check.sh DIR        # check DIR/Dockerfile and DIR/deploy (tests break a copy)
#   scripts/deploy-check.sh install    # only install the validator
#
# 1. Every Kubernetes manifest in deploy/kubernetes/ (the resources that
#    kustomization.yaml lists) against the Kubernetes OpenAPI schemas, with
#    kubernetes-validate (PyPI; it ships the schemas, so nothing is fetched
#    at check time) in strict mode: unknown or misspelt fields fail.
# 2. scripts/deploy_check.py: what a schema cannot see: the wiring between
#    the Dockerfile, deploy/compose.yml, deploy/prometheus.yml, the Grafana
#    provisioning and the Kubernetes objects (one log volume per instance,
#    Prometheus targets = pipeline services, probe paths and ports, names
#    that refer to each other).
# With kubectl installed, also the output of `kubectl kustomize` (step 1
# again, on what `kubectl apply -k` would apply).
#
# On first use kubernetes-validate (pinned) is installed into a venv at
# $ECOM_DEV_DIR/deploy-venv (default <repo>/.dev/deploy-venv); later runs
# reuse it. Run by `cargo test -p ecom-pipeline --test it deploy`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_DIR="${ECOM_DEV_DIR:-$ROOT/.dev}"
[[ "$DEV_DIR" = /* ]] || DEV_DIR="$PWD/$DEV_DIR"
# Not the cqlsh venv (scripts/cql.sh rebuilds that one from scratch when its
# own stamp is missing).
VENV="$DEV_DIR/deploy-venv"
# The schemas the manifests are checked against: a recent Kubernetes minor.
KUBERNETES_VERSION="${ECOM_KUBERNETES_VERSION:-1.33}"
PIP_SPEC=(kubernetes-validate==1.37.0 PyYAML==6.0.2)
STAMP="$VENV/.ecom-deploy-kubernetes-validate-1.37.0"

die() { echo "deploy-check.sh: ERROR: $*" >&2; exit 1; }
log() { echo "deploy-check.sh: $*" >&2; }

ensure_venv() {
  [[ -f "$STAMP" ]] && return 0
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || die "$py not found (need Python >= 3.9; set PYTHON=...)"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "$py is too old (need Python >= 3.9)"
  mkdir -p "$DEV_DIR"
  # Serialise the first install when several tests start at once.
  exec 9>"$DEV_DIR/.deploy-venv.lock"
  flock 9 || die "cannot lock $DEV_DIR/.deploy-venv.lock"
  if [[ ! -f "$STAMP" ]]; then
    log "installing ${PIP_SPEC[*]} into $VENV ..."
    rm -rf "$VENV"
    "$py" -m venv "$VENV" \
      || die "python venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PIP_SPEC[@]}" \
      || die "pip install ${PIP_SPEC[*]} failed (needs PyPI)"
    touch "$STAMP"
  fi
  exec 9>&-
}

ensure_venv
[[ "${1:-}" == install ]] && { log "kubernetes-validate ready in $VENV"; exit 0; }
CHECK_ROOT="${1:-$ROOT}"
[[ -f "$CHECK_ROOT/deploy/kubernetes/kustomization.yaml" ]] \
  || die "$CHECK_ROOT has no deploy/kubernetes/kustomization.yaml"
cd "$CHECK_ROOT"

# The manifests are exactly what the kustomization lists: a file added to
# the folder but not to kustomization.yaml would never be applied.
mapfile -t manifests < <("$VENV/bin/python" -c '
import sys, yaml
k = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
for r in k["resources"]:
    print("deploy/kubernetes/" + r)
')
(( ${#manifests[@]} > 0 )) || die "deploy/kubernetes/kustomization.yaml lists no resources"

log "kubernetes-validate --strict -k $KUBERNETES_VERSION ${manifests[*]}"
"$VENV/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "${manifests[@]}" \
  || die "Kubernetes manifests do not validate against the $KUBERNETES_VERSION schemas (see above)"

# What `kubectl apply -k` would apply (the image tag set, and so on), when
# kubectl is installed; its kustomize needs no cluster.
if command -v kubectl >/dev/null; then
  rendered="$(mktemp "${TMPDIR:-/tmp}/ecom-kustomize.XXXXXX.yaml")"
  trap 'rm -f "$rendered"' EXIT
  log "kubectl kustomize deploy/kubernetes | kubernetes-validate --strict"
  kubectl kustomize deploy/kubernetes >"$rendered" \
    || die "kubectl kustomize deploy/kubernetes failed (see above)"
  "$VENV/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "$rendered" \
    || die "the kustomize output does not validate (see above)"
else
  log "kubectl not found: the kustomize output is not rendered (the files above were validated one by one)"
fi

log "scripts/deploy_check.py"
"$VENV/bin/python" "$ROOT/scripts/deploy_check.py" "$CHECK_ROOT" \
  || die "deployment files are not consistent (see above)"
log "all deployment checks passed"
