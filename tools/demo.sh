#!/usr/bin/env bash
# The main job, with its own set-up: a venv with the package, then the README's quick start.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python examples/quickstart.py "$@"
