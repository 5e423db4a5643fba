#!/usr/bin/env bash
# Install everything monai_unlearn needs on a fresh machine (idempotent): torch first (the CPU wheel, so no
# CUDA packages are pulled), then the package with its test tools, then the offline data sets.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "[setup] installing torch==2.13.0"
    "$PYTHON" -m pip install -q "torch==2.13.0"
fi
echo "[setup] installing monai_unlearn with its dev extra"
"$PYTHON" -m pip install -q -e ".[dev]"
PYTHON="$PYTHON" bash scripts/install_data.sh
