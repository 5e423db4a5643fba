#!/usr/bin/env bash
# The test suite: set up, then run every test (unittest-style files, collected by pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$PYTHON" -m pytest -q -p no:cacheprovider tests "$@"
