#!/usr/bin/env bash
# Validates the deployment files offline, with tools from the package registries:
#   - docker-compose.yml: `docker-compose config` (Debian's docker-compose, which checks the file
#     against the Compose schema; no Docker engine needed);
#   - k8s/: `kubectl kustomize` renders the base and every overlay, then kubernetes-validate
#     (PyPI, ships the Kubernetes JSON schemas) checks every object against the schema of a
#     fixed Kubernetes version, strictly (unknown fields are errors); the custom resources
#     (KEDA ScaledObject, prometheus-operator PrometheusRule) are checked against the JSON
#     schemas kept in k8s/schemas/ (.ci/validate-crds.py), and those schemas must reject the
#     invalid examples in k8s/schemas/invalid/;
#   - the alert rules: `promtool check rules` and `promtool test rules` (Debian's prometheus
#     package), and k8s/monitoring's copies in step with deploy/ (deploy/monitoring-sync.sh).
# Installs what it lacks, is safe to run again, and fails on any invalid file.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.32.0
VALIDATOR_VERSION=1.37.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/smart-joiner-ci/venv"

need_apt=()
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubectl)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
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
rendered=()
for dir in k8s/base k8s/overlays/*/ k8s/monitoring; do
  dir=${dir%/}
  name=$(echo "$dir" | tr '/' '_')
  echo "== $dir"
  kubectl kustomize "$dir" >"$out/$name.yaml"
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$out/$name.yaml" \
    2>&1 | tee "$out/$name.log"
  test "${PIPESTATUS[0]}" -eq 0
  # kubernetes-validate only warns about a kind it has no schema for: a built-in group's kind
  # it does not know is a mistake (e.g. apps/v2); custom groups are checked below.
  if grep "Couldn't find schema" "$out/$name.log" | grep -vqE "api version [a-z0-9-]+\.[a-z0-9.-]+/"; then
    echo "$dir: a built-in kind without a schema (wrong apiVersion?)" >&2
    exit 1
  fi
  rendered+=("$out/$name.yaml")
done
echo "== custom resources (k8s/schemas)"
"$venv/bin/python" .ci/validate-crds.py k8s/schemas "${rendered[@]}"
"$venv/bin/python" .ci/validate-crds.py k8s/schemas --expect-invalid k8s/schemas/invalid/*.yaml

echo "== alert rules and dashboard"
promtool check rules deploy/prometheus/smart-joiner.rules.yaml
promtool test rules deploy/prometheus/smart-joiner.rules.test.yaml
# The compose Prometheus' config, with its rule file where this checkout has it.
sed "s|/etc/prometheus/smart-joiner.rules.yaml|$PWD/deploy/prometheus/smart-joiner.rules.yaml|" \
  deploy/prometheus/prometheus.yml >"$out/prometheus.yml"
promtool check config "$out/prometheus.yml"
python3 -m json.tool deploy/grafana/smart-joiner.json >/dev/null
bash deploy/monitoring-sync.sh --check
echo "deployment files: valid"
