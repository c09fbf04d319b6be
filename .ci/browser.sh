#!/usr/bin/env bash
# What the console's browser test needs (tests/it/console.rs, tests/browser/console.mjs):
# Debian's chromium, Node.js with npm, and playwright-core from tests/browser's lock file.
# Installs what is missing and is safe to run again; the test itself fails, never skips,
# when any of it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.installed-lock
if ! cmp -s "$lock" "$stamp" 2>/dev/null; then
  echo "npm ci in tests/browser (playwright-core; no browser download: Debian's chromium is used)"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  cp "$lock" "$stamp"
fi
echo "chromium: $(chromium --version 2>/dev/null || echo missing); node $(node --version)"
