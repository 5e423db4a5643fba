"""Running the unlearn overlay: ``python -m monai.bundle run unlearn`` and the ``UnlearnWorkflow`` class."""

from __future__ import annotations

import logging
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from monai_unlearn.bundle.parser import calling_config_parser
from monai_unlearn.bundle.settings import OVERLAY_CONFIG

__all__ = ["config_error_cause", "unlearn_from_parser", "unlearn_running_bundle", "UnlearnWorkflow"]

logger = logging.getLogger(__name__)

#: the config id ``python -m monai.bundle run unlearn`` runs: the overlay's components, trainer and output.
RUN_ID = "unlearn"


def unlearn_from_parser(parser: ConfigParser) -> dict[str, Any]:
    """Run the overlay's ``unlearn`` components on the merged config ``parser`` and write the new bundle.

    ``parser`` holds the wrapped bundle's config with ``unlearn.json`` (and any overrides); the overlay's file is
    added when it is missing. Resolving ``unlearn`` builds the request, datasets, loaders, optimizer, handlers
    and trainer in order, runs the trainer (``unlearn#run``) and writes the bundle (``unlearn#finalize``).

    Returns:
        the summary of ``write_unlearned_bundle``: output folder, numbers of forgotten and kept items, table, record.
    """
    if not isinstance(parser.get(RUN_ID), dict) or "trainer" not in parser.get(RUN_ID):
        overlay = ConfigParser.load_config_file(OVERLAY_CONFIG)
        for key, value in overlay.items():
            if key == RUN_ID or key not in parser:
                parser[key] = value
    try:
        return parser.get_parsed_content(RUN_ID)["finalize"]
    except RuntimeError as error:
        cause = config_error_cause(error)
        if cause is error:
            raise
        raise cause.with_traceback(cause.__traceback__) from None


def config_error_cause(error: BaseException) -> BaseException:
    """The error a config component raised, from inside MONAI's "Failed to instantiate / evaluate" wrappers.

    MONAI's config parser re-raises any error of a component as ``RuntimeError(f"Failed to ... {item}")``; the
    Python entry points give the caller the original (``FileExistsError``, ``ForgetSelectionError``, ...).
    """
    while (isinstance(error, RuntimeError) and error.__cause__ is not None
           and str(error).startswith(("Failed to instantiate", "Failed to evaluate"))):
        error = error.__cause__
    return error


def unlearn_running_bundle() -> dict[str, Any]:
    """Unlearn from the config being run (an overlay of older releases called this from its ``unlearn`` id)."""
    return unlearn_from_parser(calling_config_parser())


class UnlearnWorkflow(ConfigWorkflow):
    """The unlearn bundle as a workflow class, for ``python -m monai.bundle run_workflow``.

    The overlay's ``unlearn.json`` is added to ``config_file`` when it is not there.

    Example::

        python -m monai.bundle run_workflow monai_unlearn.bundle.UnlearnWorkflow \\
            --config_file <B>/configs/train.json --meta_file <B>/configs/metadata.json --bundle_root <B> \\
            --forget device=scanner_a --output_dir <OUT>

    Keyword arguments other than the ``ConfigWorkflow`` ones override config ids, as with ``run``.
    """

    def __init__(self, config_file: str | list[str], **kwargs: Any) -> None:
        files = [config_file] if isinstance(config_file, str) else list(config_file)
        if not any(str(f).endswith("unlearn.json") for f in files):
            files.append(OVERLAY_CONFIG)
        kwargs.setdefault("workflow_type", None)
        super().__init__(config_file=files, **kwargs)
        self.summary: dict[str, Any] | None = None

    def run(self) -> dict[str, Any]:
        """Unlearn and write the new bundle; returns the summary of ``unlearn_from_parser``."""
        self.summary = unlearn_from_parser(self.parser)
        return self.summary

    def check_properties(self) -> list[str] | None:
        """Unlearning reads its own parts (see ``detect_layout``), not the train workflow's properties."""
        return None
