#!/usr/bin/env bash
# Every test, with its own set-up: a venv with the package and its dev extras, notebook hygiene checks,
# every notebook's lessons (nbdev-test), then pytest. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
fail() { echo "FAILED: $*"; exit 1; }

[ -x .venv/bin/python ] || python3 -m venv .venv || fail "could not create .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' || fail "pip install -e .[dev]"
export PATH="$PWD/.venv/bin:$PATH"

# 1. Notebooks are clean and the package and README match them: regenerating must change nothing.
snapshot() { git status --porcelain --untracked-files=all; git diff; git ls-files -o --exclude-standard -z | xargs -0 -r sha1sum; }
before=$(snapshot)
nbdev-clean && nbdev-export && python tools/readme.py || fail "nbdev-clean / nbdev-export / tools/readme.py errored"
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "These files change when regenerated from the notebooks: run nbdev-clean, nbdev-export and tools/readme.py, then commit:"
  diff <(echo "$before") <(echo "$after") | grep '^>' | head -20
  fail "notebooks not clean or package/README out of date"
fi
echo "notebooks clean; package and README match the notebooks"

# 2. Every notebook's lessons. nbdev-test says "Success." even when it finds no notebook, so count them first.
nbs=$(find nbs -name '*.ipynb' ! -path '*/.ipynb_checkpoints/*' ! -name '_*' | wc -l)
[ "$nbs" -gt 0 ] || fail "no notebooks found under nbs/"
if nbdev-test --n-workers 2; then echo "nbdev-test: $nbs passed, 0 failed"
else fail "nbdev-test: at least one of $nbs notebooks failed (see above)"; fi

bash tests/setup.sh || fail "tests/setup.sh (npm ci, chromium)"
# 3. What cannot be a lesson: real HTTP servers, browsers, fuzzing.
python -m pytest tests/ -q -p no:cacheprovider
