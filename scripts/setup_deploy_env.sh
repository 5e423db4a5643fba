#!/usr/bin/env bash
# Create the MONAI Deploy App SDK environment for monai_unlearn.deploy (idempotent), kept apart from the core
# install so the SDK (which installs into monai/deploy/ and pulls Holoscan) can never break `import monai` there.
#
#   bash scripts/setup_deploy_env.sh            # -> .venv-deploy (or $MONAI_UNLEARN_DEPLOY_VENV)
#   .venv-deploy/bin/python -m monai_unlearn.deploy.app -i IN -o OUT -m BUNDLE/models/model.ts
#
# The venv sees the core install's packages (--system-site-packages: torch, nibabel, monai_unlearn itself), so
# torch is not installed twice. Two packages must still be installed inside it:
#   - monai itself (same version, --no-deps): MONAI is a regular package, so the SDK's monai/deploy/ in the venv
#     is invisible while `monai` resolves to the core install's copy;
#   - filelock: Holoscan's .pth hook imports it while the venv's site-packages is processed, before the system
#     site-packages are on sys.path.
# Measured on 2 CPU cores with a warm pip cache: ~45 s, ~500 MB (Holoscan, cupy and tritonclient wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
VENV="${MONAI_UNLEARN_DEPLOY_VENV:-.venv-deploy}"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "[setup_deploy_env] installing torch==2.13.0 in the core interpreter first"
    "$PYTHON" -m pip install -q "torch==2.13.0"
fi
if ! "$PYTHON" -c "import monai_unlearn" 2>/dev/null; then
    "$PYTHON" -m pip install -q -e .
fi
MONAI_VERSION="$("$PYTHON" -c "import monai; print(monai.__version__)")"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import monai.deploy.core, monai_unlearn" 2>/dev/null; then
    echo "[setup_deploy_env] $VENV is ready"
    exit 0
fi
echo "[setup_deploy_env] creating $VENV (system site packages + monai-deploy-app-sdk)"
"$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps --ignore-installed "monai==$MONAI_VERSION" filelock
"$VENV/bin/python" -m pip install -q "monai-deploy-app-sdk>=3.0,<5" pydicom highdicom "monai==$MONAI_VERSION"
"$VENV/bin/python" -c "import monai, monai.deploy.core, torch, monai_unlearn.deploy.app; \
print('[setup_deploy_env] ok: monai', monai.__version__, 'torch', torch.__version__)"
