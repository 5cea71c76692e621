#!/usr/bin/env bash
# The main job, with its own set-up: a venv with the package, then the demo app on http://localhost:5001 (Ctrl-C stops it).
# Options pass through: --host, --port, --db. Set AUTH_PROVIDER, AUTH_CLIENT_ID, AUTH_CLIENT_SECRET to use a real provider.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/fasthtml-oauth-demo "$@"
