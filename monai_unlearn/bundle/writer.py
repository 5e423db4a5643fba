"""Writing the unlearned model as a complete new bundle, atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata

from monai_unlearn.io import atomic_write_json

__all__ = ["bump_version", "export_torchscript", "write_new_bundle", "COPIED_ENTRIES"]

# what is copied from the wrapped bundle: its definition, not its weights, data or outputs
COPIED_ENTRIES = ("configs", "docs", "scripts", "LICENSE", "NOTICE", "NOTICE.md", "large_files.yml", "large_files.yaml")


def bump_version(version: str) -> str:
    """Increase the last numeric part of a dotted version: ``0.1.0`` -> ``0.1.1``; ``1`` -> ``2``."""
    parts = str(version).split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            parts[i] = str(int(parts[i]) + 1)
            return ".".join(parts)
    return f"{version}.1"


def export_torchscript(
    network: torch.nn.Module, path: str, meta: Mapping[str, Any], config_files: Mapping[str, str],
    example_input: torch.Tensor | None = None,
) -> str:
    """Save ``network`` as TorchScript with the metadata and configs embedded, as ``monai.bundle ckpt_export`` does.

    Scripting is tried first; networks that cannot be scripted are traced on ``example_input``.

    Args:
        network: the network with its final weights.
        path: the ``.ts`` file to write.
        meta: the bundle metadata to embed.
        config_files: config name (e.g. ``"inference"``) -> file path; each is embedded as ``<name>.json``.
        example_input: an input batch for tracing.

    Returns:
        ``path``.

    Raises:
        RuntimeError: when the network can neither be scripted nor traced.
    """
    network = network.eval()
    try:
        jit_obj = torch.jit.script(network)
    except Exception as script_error:  # scripting fails on many dynamic networks: fall back to tracing
        if example_input is None:
            raise RuntimeError(f"the network cannot be scripted and no example input was given to trace it: {script_error}")
        with torch.no_grad():
            jit_obj = torch.jit.trace(network, example_input)
    extra = {f"{name}.json": json.dumps(ConfigParser.load_config_file(p)).encode() for name, p in config_files.items()}
    save_net_with_metadata(jit_obj, path, include_config_vals=False, append_timestamp=False, meta_values=dict(meta),
                           more_extra_files=extra)
    return path


def write_new_bundle(
    source_root: str,
    output_dir: str,
    state_dict: Mapping[str, torch.Tensor],
    changelog_entry: str,
    write_extras: Callable[[str, dict[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a new bundle at ``output_dir`` from ``source_root``'s definition and new weights.

    The bundle is assembled in a temporary folder beside ``output_dir`` and moved into place at the end, so
    ``output_dir`` is either complete or absent (an existing one is replaced only with ``overwrite``). The
    source bundle is only read.

    Args:
        source_root: the wrapped bundle.
        output_dir: where the new bundle goes.
        state_dict: the unlearned weights (saved as ``models/model.pt``).
        changelog_entry: the text of the new version's changelog entry.
        write_extras: called as ``write_extras(tmp_root, meta)`` to add files (TorchScript, report, audit)
            before the move; ``meta`` is the updated metadata.
        overwrite: replace an existing ``output_dir``.

    Returns:
        the new bundle's metadata.

    Raises:
        FileExistsError: when ``output_dir`` exists and ``overwrite`` is false.
        ValueError: when ``output_dir`` is inside the source bundle or equal to it.
    """
    source_root = os.path.abspath(source_root)
    output_dir = os.path.abspath(output_dir)
    if output_dir == source_root or output_dir.startswith(source_root + os.sep):
        raise ValueError(f"the output {output_dir} lies inside the wrapped bundle {source_root}; choose another folder.")
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; choose a new folder or pass overwrite (--overwrite true).")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_root = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.tmp-")
    try:
        for entry in COPIED_ENTRIES:
            src = os.path.join(source_root, entry)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tmp_root, entry))
            elif os.path.isfile(src):
                shutil.copy2(src, os.path.join(tmp_root, entry))
        meta_path = os.path.join(tmp_root, "configs", "metadata.json")
        meta = ConfigParser.load_config_file(meta_path) if os.path.isfile(meta_path) else {}
        old_version = str(meta.get("version", "0.0.0"))
        meta["version"] = bump_version(old_version)
        meta["changelog"] = {meta["version"]: changelog_entry, **meta.get("changelog", {})}
        os.makedirs(os.path.join(tmp_root, "configs"), exist_ok=True)
        atomic_write_json(meta, meta_path)
        os.makedirs(os.path.join(tmp_root, "models"), exist_ok=True)
        torch.save(dict(state_dict), os.path.join(tmp_root, "models", "model.pt"))
        if write_extras is not None:
            write_extras(tmp_root, meta)
        if overwrite and os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        # without overwrite, a folder another run created meanwhile makes this move fail rather than be replaced
        os.replace(tmp_root, output_dir)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return meta
