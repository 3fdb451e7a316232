#!/usr/bin/env bash
# Creates .venv and installs tagger with the given extras. Sourced by demo.sh and test.sh.
set -euo pipefail
extras="${1:-build,samples}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install --quiet --upgrade pip
"$root/.venv/bin/python" -m pip install --quiet -e "$root[$extras]"
