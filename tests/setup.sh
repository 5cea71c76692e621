#!/usr/bin/env bash
# Set-up for the end-to-end tests, idempotent and quiet when already done:
# - the real OpenID provider's packages and the docs site's browser assets (npm ci from the committed lockfiles) when
#   node_modules is missing or older than the lockfile;
# - Debian's chromium for the Playwright tests when /usr/bin/chromium is missing (never a downloaded browser);
# - Debian's redis-server for the Redis store's tests when missing (the tests start and stop their own on a loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."

# npm ci <folder> from its committed lockfile when node_modules is missing, lacks `needs`, or is older than the lockfile
npm_ci() {
  local dir=$1 needs=$2 stamp=$1/node_modules/.package-lock.json  # npm writes the stamp on every install
  if [ ! -f "$stamp" ] || [ ! -e "$dir/node_modules/$needs" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    command -v npm >/dev/null || { echo "tests/setup.sh: npm is not installed (Node.js 18.12 or later is needed)" >&2; exit 1; }
    echo "tests/setup.sh: npm ci --prefix $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
  fi
}
npm_ci tests/oidc_provider oidc-provider
npm_ci tools/docs_assets .bin/pagefind  # the docs site's Mermaid and Pagefind (tools/docs.py)

# apt-get install <packages>, without letting the packages start services (the tests start what they need themselves)
apt_install() {
  command -v apt-get >/dev/null || { echo "tests/setup.sh: $* missing and there is no apt-get to install it" >&2; exit 1; }
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  local policy=/usr/sbin/policy-rc.d made=
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null; $sudo chmod +x $policy; made=1; fi
  echo "tests/setup.sh: apt-get install $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null || { [ -z "$made" ] || $sudo rm -f $policy; exit 1; }
  [ -z "$made" ] || $sudo rm -f $policy
}
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
