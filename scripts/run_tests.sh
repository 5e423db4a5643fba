#!/usr/bin/env bash
# The test suite: set up (package, data, and the separate MONAI Deploy environment), then run every test
# (unittest-style files, collected by pytest). The deploy tests fail rather than skip when that environment is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_deploy_env.sh
export MONAI_UNLEARN_REQUIRE_DEPLOY=1
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$PYTHON" -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
