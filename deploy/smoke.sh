#!/usr/bin/env bash
# The compose stack end to end, as a new user runs it, with tgsim (the loopback Telegram DC) as
# Telegram in a container of its own:
#
#   1. starts a Docker engine when none answers (root only; DOCKERD_ARGS adds flags);
#   2. builds the image and its tgsim target;
#   3. brings up tgsim, postgres, redis, migrate and two workers from docker-compose.yml (plus
#      deploy/smoke/compose.smoke.yml: tgsim, fast pacing, this run's own accounts file);
#   4. syncs the accounts, imports the targets and runs the producer through compose;
#   5. mid-batch, `docker-compose stop worker`: every worker must exit 0 with no lease left in
#      Redis and no target left `joining` (in-flight joins ended and recorded);
#   6. restarts them, SIGKILLs one worker container mid-batch, brings it back, and runs the
#      producer until every target is settled (the producer recovers the killed worker's work);
#   7. checks the admin command's `status --json` (every target terminal, none lost);
#   8. runs the Kubernetes pods as k8s/overlays/second-pool declares them (deploy/pods.py: the
#      migration Job, the producers, the workers, the exporter) on the stack's network;
#   9. checks tgsim's violations (0), then removes the stack and its volumes.
#
#   deploy/smoke.sh
#
# Environment (all optional):
#   DOCKER, COMPOSE      the docker client (with BuildKit) and docker-compose to use
#   SMOKE_PROJECT        compose project name (default smartjoiner-smoke)
#   SMOKE_TARGETS        number of target groups (default 40); SMOKE_ACCOUNTS (default 8)
#   SMOKE_BEFORE_BUILD   a command run before the build, e.g. to load base images into the
#                        engine on a machine without registry access
#   SMOKE_KEEP=1         leave the stack running at the end
#   DOCKERD_ARGS         extra flags for the dockerd this script starts
# The last result is recorded in README.md ("Compose smoke test").
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
COMPOSE=${COMPOSE:-docker-compose}
PROJECT=${SMOKE_PROJECT:-smartjoiner-smoke}
TARGETS=${SMOKE_TARGETS:-40}
ACCOUNTS=${SMOKE_ACCOUNTS:-8}
NICHE=smoke
SMOKE_DIR=$(mktemp -d)
chmod 777 "$SMOKE_DIR"
export SMOKE_DIR
export COMPOSE_PROFILES=tgsim,producer,admin
export DOCKER_BUILDKIT=1
started_dockerd=""
t0=$(date +%s)

log() { printf '%s smoke: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() {
  log "FAILED: $*"
  compose logs --no-color --tail=60 migrate worker tgsim >&2 2>/dev/null || true
  exit 1
}
compose() { "$COMPOSE" -p "$PROJECT" -f docker-compose.yml -f deploy/smoke/compose.smoke.yml "$@"; }
admin() { compose run --rm --no-deps -T admin "$@"; }

cleanup() {
  local rc=$?
  if [[ "${SMOKE_KEEP:-}" != 1 ]]; then
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [[ -n "$started_dockerd" ]]; then
    kill "$started_dockerd" 2>/dev/null || true
  fi
  rm -rf "$SMOKE_DIR"
  exit $rc
}
trap cleanup EXIT

for tool in "$DOCKER" "$COMPOSE" python3 kubectl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

# 1. A Docker engine.
if ! "$DOCKER" info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || fail "no Docker engine answers and only root can start one"
  log "no Docker engine answers: starting dockerd"
  # shellcheck disable=SC2086
  dockerd ${DOCKERD_ARGS:-} >"$SMOKE_DIR/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not come up: $(tail -5 "$SMOKE_DIR/dockerd.log")"
fi

# 2. The images.
if [[ -n "${SMOKE_BEFORE_BUILD:-}" ]]; then
  log "running SMOKE_BEFORE_BUILD"
  bash -c "$SMOKE_BEFORE_BUILD"
fi
log "building smart-joiner:local and smart-joiner-tgsim:local"
tb=$(date +%s)
"$DOCKER" build -q -t smart-joiner:local . >/dev/null || fail "docker build"
"$DOCKER" build -q --target tgsim -t smart-joiner-tgsim:local . >/dev/null || fail "docker build --target tgsim"
# The Kubernetes manifests name smart-joiner:latest (kustomize's images: sets the tag).
"$DOCKER" tag smart-joiner:local smart-joiner:latest
build_s=$(($(date +%s) - tb))
log "images built in ${build_s}s"

# 3. The scenario: accounts and groups tgsim knows; every join answered after 1.5 s (so a stop
# always finds joins in flight), two groups answering with a FloodWait first.
python3 - "$SMOKE_DIR" "$ACCOUNTS" "$TARGETS" <<'PY'
import base64, json, os, sys
out, n_accounts, n_groups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
accounts = [{"session_name": f"smoke_acc_{i}", "user_id": 7000 + i, "first_name": f"Smoke {i}",
             "auth_key": base64.b64encode(os.urandom(256)).decode(), "registered": True,
             "authorized": True} for i in range(n_accounts)]
groups = [{"id": 9000 + i, "title": f"Smoke group {i}", "username": f"smoke_group_{i}",
           "access_hash": int.from_bytes(os.urandom(7), "big"), "broadcast": False,
           "request_needed": False} for i in range(n_groups)]
scripts = [{"target": f"@smoke_group_{i}", "on": "join",
            "answers": [{"kind": "flood_wait", "seconds": 5}, {"kind": "ok", "delay_ms": 1500}]}
           for i in (0, 1)]
scripts.append({"on": "join", "answers": [{"kind": "ok", "delay_ms": 1500}]})
scenario = {"dc_id": 2, "api_id": 12345, "api_hash": "0123456789abcdef0123456789abcdef",
            "rules": {"min_join_pause_ms": 800, "duplicate_kills_key": True},
            "accounts": accounts, "groups": groups, "scripts": scripts}
json.dump(scenario, open(os.path.join(out, "scenario.json"), "w"), indent=1)
with open(os.path.join(out, "targets.txt"), "w") as f:
    for g in groups:
        f.write(f"@{g['username']}\n")
PY
chmod 666 "$SMOKE_DIR"/*

log "starting tgsim"
compose up -d tgsim >/dev/null || fail "compose up tgsim"
for _ in $(seq 60); do [[ -s "$SMOKE_DIR/accounts_config.json" ]] && break; sleep 1; done
[[ -s "$SMOKE_DIR/accounts_config.json" ]] || fail "tgsim wrote no accounts file"

log "starting postgres, redis, migrate and two workers"
compose up -d postgres redis migrate worker >/dev/null || fail "compose up"
healthy_workers() {
  local n=0 id
  for id in $(compose ps -q worker); do
    [[ $("$DOCKER" inspect -f '{{.State.Health.Status}}' "$id") == healthy ]] && n=$((n + 1))
  done
  echo $n
}
for _ in $(seq 90); do [[ $(healthy_workers) -ge 2 ]] && break; sleep 2; done
[[ $(healthy_workers) -ge 2 ]] || fail "two healthy workers did not come up"
log "two workers healthy"

# 4. Accounts, targets, producer.
admin accounts sync >/dev/null || fail "accounts sync"
admin targets import /smoke/targets.txt --niche "$NICHE" >/dev/null || fail "targets import"
produce() {
  compose run --rm --no-deps -T producer "$NICHE" "$TARGETS" >"$SMOKE_DIR/producer.log" 2>&1 ||
    fail "producer: $(tail -5 "$SMOKE_DIR/producer.log")"
}
produce

# Counts of the niche's targets by status, from `status --json`.
counts() {
  admin --json status | python3 -c '
import json, sys
niche = sys.argv[1]
c = {}
for t in json.load(sys.stdin)["targets"]:
    if t["niche"] == niche:
        c[t["status"]] = c.get(t["status"], 0) + t["count"]
print(" ".join(f"{k}={v}" for k, v in sorted(c.items())))' "$NICHE"
}
count_of() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$2" | grep . || echo 0; }
settled() { local c=$1; (($(count_of new "$c") + $(count_of queued "$c") + $(count_of joining "$c") == 0)); }
wait_joined() { # at least N joined
  local c
  for _ in $(seq 120); do
    c=$(counts)
    (($(count_of joined "$c") >= $1)) && return 0
    sleep 2
  done
  fail "fewer than $1 joined: $c"
}

# 5. A graceful stop mid-batch.
wait_joined 3
log "mid-batch: $(counts); docker-compose stop worker"
ts=$(date +%s)
compose stop worker >/dev/null
stop_s=$(($(date +%s) - ts))
for id in $(compose ps -q worker); do
  code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$id")
  [[ "$code" == 0 ]] || fail "a worker exited $code after SIGTERM"
done
leases=$(compose exec -T redis redis-cli --scan --pattern 'smart_joiner:lease:*' | wc -l)
[[ "$leases" == 0 ]] || fail "$leases leases left in Redis after the workers stopped"
after_stop=$(counts)
(($(count_of joining "$after_stop") == 0)) || fail "targets left joining after a clean stop: $after_stop"
log "workers stopped in ${stop_s}s, exit 0, no lease held, none joining: $after_stop"

# 6. Back up, then a SIGKILLed worker mid-batch.
compose start worker >/dev/null
wait_joined $(($(count_of joined "$after_stop") + 3))
victim=$(compose ps -q worker | head -n 1)
log "mid-batch: $(counts); SIGKILL worker ${victim:0:12}"
"$DOCKER" kill -s KILL "$victim" >/dev/null
sleep 2
compose up -d --no-recreate worker >/dev/null
"$DOCKER" start "$victim" >/dev/null 2>&1 || true
for _ in $(seq 90); do [[ $(healthy_workers) -ge 2 ]] && break; sleep 2; done
[[ $(healthy_workers) -ge 2 ]] || fail "the workers did not come back"

deadline=$(($(date +%s) + 600))
rounds=0
while c=$(counts); ! settled "$c"; do
  (($(date +%s) < deadline)) || fail "not settled within 10 minutes: $c"
  rounds=$((rounds + 1))
  produce
  sleep 10
done
final=$(counts)
total=0
for s in joined requested error banned; do total=$((total + $(count_of $s "$final"))); done
((total == TARGETS)) || fail "targets lost: $final (expected $TARGETS settled)"
log "settled after $rounds producer runs: $final"

# 8. The pods as the manifests declare them, on the stack's network (postgres, redis and tgsim
# resolve there), with the Secret an operator would create for this stack.
network=$("$DOCKER" inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(compose ps -q postgres)")
kubectl kustomize k8s/overlays/second-pool >"$SMOKE_DIR/rendered.yaml"
python3 deploy/pods.py "$SMOKE_DIR/rendered.yaml" --network "$network" \
  --secret DATABASE_URL=postgres://smart_joiner:smart_joiner@postgres:5432/smart_joiner \
  --secret REDIS_URL=redis://redis:6379 \
  --secret-file "accounts_config.json=$SMOKE_DIR/accounts_config.json" || fail "pods as declared"

# 9. Telegram's side: tgsim prints its violations when it stops.
compose stop tgsim >/dev/null
violations=$(compose logs --no-color tgsim | sed -n 's/.*| \([0-9][0-9]*\) violation(s).*/\1/p' | tail -n 1)
[[ -n "$violations" ]] || fail "tgsim reported no violation count"
[[ "$violations" == 0 ]] || fail "tgsim saw $violations violation(s): $(compose logs --no-color tgsim | tail -n 20)"

log "PASSED in $(($(date +%s) - t0))s (build ${build_s}s, graceful stop ${stop_s}s): $final, 0 violations"
