#!/usr/bin/env bash
# The Python package (python/): built with maturin (debug) into a venv under the target dir and
# tested by pytest against SQLite and tgsim, with the workspace's debug binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
mkdir -p "${CARGO_TARGET_DIR:-target}"
target="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
venv="$target/py-venv"
if ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q python3-venv python3-pip
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "maturin>=1.5,<2" pytest
cargo build -p smart-joiner --bin smart-joiner -p tgsim --bin tgsim
(cd "$root/python" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop -q)
SMART_JOINER_BIN_DIR="$target/debug" "$venv/bin/python" -m pytest -q "$root/python/tests"
