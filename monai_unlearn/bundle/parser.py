"""Finding the ``ConfigParser`` that is evaluating a bundle config, from code the config calls."""

from __future__ import annotations

import inspect

from monai.bundle import ConfigParser

__all__ = ["calling_config_parser"]


def calling_config_parser() -> ConfigParser:
    """The ``ConfigParser`` that is evaluating the current config expression.

    ``python -m monai.bundle run unlearn`` evaluates the overlay's ``unlearn`` expressions inside
    ``ConfigParser.get_parsed_content``; the parser is found on the call stack so the expression can read the
    wrapped bundle's own config ids, whatever its layout.

    Raises:
        RuntimeError: when not called from within a config expression.
    """
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        frame = frame.f_back
    raise RuntimeError("this must run inside a bundle config (python -m monai.bundle run unlearn ...).")
