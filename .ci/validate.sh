#!/usr/bin/env bash
# Validates the deployment files offline, with tools from the package registries:
#   - docker-compose.yml: `docker-compose config` (Debian's docker-compose, which checks the file
#     against the Compose schema; no Docker engine needed);
#   - k8s/: `kubectl kustomize` renders the base and every overlay, then kubernetes-validate
#     (PyPI, ships the Kubernetes JSON schemas) checks every object against the schema of a
#     fixed Kubernetes version, strictly (unknown fields are errors).
# Installs what it lacks, is safe to run again, and fails on any invalid file.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.32.0
VALIDATOR_VERSION=1.37.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/smart-joiner-ci/venv"

need_apt=()
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubectl)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VALIDATOR_VERSION"; then
  echo "installing kubernetes-validate $VALIDATOR_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$VALIDATOR_VERSION"
fi

echo "== docker-compose.yml"
# The compose file mounts ./accounts_config.json; the check needs no real one.
COMPOSE_PROFILES=producer,admin,observability,console docker-compose -f docker-compose.yml config -q
echo "docker-compose.yml: valid"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for dir in k8s/base k8s/overlays/*/; do
  dir=${dir%/}
  name=$(echo "$dir" | tr '/' '_')
  echo "== $dir"
  kubectl kustomize "$dir" >"$out/$name.yaml"
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$out/$name.yaml"
done
echo "deployment files: valid"
