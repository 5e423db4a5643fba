"""monai_unlearn.deploy: a MONAI Deploy App SDK application that runs a bundle written by the unlearn command.

Nothing here imports the App SDK when the package is imported: the SDK (``monai-deploy-app-sdk``, with Holoscan)
lives in its own environment (``scripts/setup_deploy_env.sh``), so it can never break ``import monai`` in the core
install. Run the application with that environment's interpreter::

    .venv-deploy/bin/python -m monai_unlearn.deploy.app -i IN -o OUT -m BUNDLE/models/model.ts

See ``monai_unlearn/deploy/README.md`` for inputs, outputs and packaging as a MONAI Application Package (MAP).
"""

from __future__ import annotations

import os
import sys

from monai.utils import optional_import

__all__ = ["DEPLOY_ENV_DIR", "deploy_python", "has_deploy_sdk", "sdk_version"]

# where scripts/setup_deploy_env.sh puts the SDK's environment (override with MONAI_UNLEARN_DEPLOY_VENV)
DEPLOY_ENV_DIR = ".venv-deploy"


def has_deploy_sdk() -> bool:
    """Whether the MONAI Deploy App SDK can be imported by this interpreter (imports it on the first call)."""
    return optional_import("monai.deploy.core", name="Application")[1]


def sdk_version() -> str | None:
    """The installed App SDK's version, or ``None`` when it is not installed (read without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("monai-deploy-app-sdk")
    except PackageNotFoundError:
        return None


def deploy_python(repo_root: str | None = None) -> str | None:
    """The interpreter of the deploy environment, or ``None`` when none is found.

    Looked up in this order: ``$MONAI_UNLEARN_DEPLOY_PYTHON``; ``$MONAI_UNLEARN_DEPLOY_VENV/bin/python``;
    ``<repo_root>/.venv-deploy/bin/python`` (``repo_root`` defaults to the folder above this package).

    Args:
        repo_root: the checkout holding ``.venv-deploy``.

    Returns:
        the path of a Python executable, or ``None``.
    """
    explicit = os.environ.get("MONAI_UNLEARN_DEPLOY_PYTHON")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    venv = os.environ.get("MONAI_UNLEARN_DEPLOY_VENV")
    if not venv:
        root = repo_root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        venv = os.path.join(root, DEPLOY_ENV_DIR)
    candidate = os.path.join(venv, "Scripts" if sys.platform == "win32" else "bin", "python")
    return candidate if os.path.isfile(candidate) else None
