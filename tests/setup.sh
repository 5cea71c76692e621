#!/usr/bin/env bash
# Set-up for the end-to-end tests, idempotent and quiet when already done:
# - the real OpenID provider's packages (npm ci from the committed lockfile) when node_modules is missing or older than it;
# - Debian's chromium for the Playwright tests when /usr/bin/chromium is missing (never a downloaded browser).
set -euo pipefail
cd "$(dirname "$0")/.."

op=tests/oidc_provider
stamp=$op/node_modules/.package-lock.json  # npm writes it on every install
if [ ! -f "$stamp" ] || [ ! -d $op/node_modules/oidc-provider ] || [ $op/package-lock.json -nt "$stamp" ]; then
  command -v npm >/dev/null || { echo "tests/setup.sh: npm is not installed (Node.js 18.12 or later is needed)" >&2; exit 1; }
  echo "tests/setup.sh: npm ci --prefix $op"
  npm ci --prefix $op --no-audit --no-fund --loglevel=error >/dev/null
fi

if [ ! -x /usr/bin/chromium ]; then
  command -v apt-get >/dev/null || { echo "tests/setup.sh: /usr/bin/chromium is missing and there is no apt-get to install it" >&2; exit 1; }
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "tests/setup.sh: apt-get install chromium"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
