#!/usr/bin/env bash
# Sets up tagger on the embedded defaults (local files, SQLite, in-process), builds the model
# from the packaged weights on first use, and tags the sample photos scikit-image ships.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" "build,samples"
samples="${TAGGER_DEMO_DIR:-$root/.tagger/samples}"
"$root/.venv/bin/python" "$root/scripts/sample_photos.py" "$samples"
"$root/.venv/bin/tagger" tag "$samples"
"$root/.venv/bin/tagger" search cat
