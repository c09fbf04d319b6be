#!/usr/bin/env bash
# Fuzzing in CI: every cargo-fuzz target for a fixed number of executions, about a minute in
# all on 2 cores after the build. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/ (commit it: the normal test suite replays it from then on).
# The longer command is in fuzz/README.md. Installs cargo-fuzz itself when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); this lets the
# stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# Executions per target, sized from the rates measured on the CI machine (fuzz/README.md):
# each target gets about the same share of the minute.
declare -A RUNS=(
  [target_link]=60000
  [targets_file]=15000
  [accounts_config]=2500
  [session]=25000
  [session_file]=5000
  [settings]=400
  [active_hours]=30000
  [folder_link]=100000
  [tgsim_frames]=30000
  [tgsim_packet]=1000
)
# The same build flags as fuzz/README.md's longer command, so one build serves both.
FLAGS=(--dev --sanitizer none)

cd fuzz
cargo fuzz build "${FLAGS[@]}"
listed=$(cargo fuzz list | sort | tr '\n' ' ')
expected=$(printf '%s\n' "${!RUNS[@]}" | sort | tr '\n' ' ')
if [ "$listed" != "$expected" ]; then
  echo "fuzz targets ($listed) and the RUNS table of .ci/fuzz.sh ($expected) differ" >&2
  exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
  # New inputs go to a scratch directory first in the list, so the committed seeds stay as
  # they are; crashes go to artifacts/<target>/.
  mkdir -p "$scratch/$target"
  echo "== fuzz $target: ${RUNS[$target]} executions"
  log="$scratch/$target.log"
  if ! cargo fuzz run "${FLAGS[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -runs="${RUNS[$target]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" \
    | tr '\n' ' '
  echo
done
echo "fuzz: every target ran its executions without a failure"
