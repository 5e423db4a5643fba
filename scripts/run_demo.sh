#!/usr/bin/env bash
# The main job: set up, then unlearn a retired scanner from the example bundle and print the report table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$PYTHON" -m monai_unlearn.apps.demo "$@"
