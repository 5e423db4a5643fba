"""Compose two unlearned bundles into a third: the feature extractor of one, the head of the other."""

from __future__ import annotations

import os
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_unlearn.bundle.checkpoint import load_bundle_weights
from monai_unlearn.bundle.layout import find_bundle_config
from monai_unlearn.bundle.writer import export_torchscript, write_new_bundle
from monai_unlearn.core.composition import compose_models, head_prefixes_for
from monai_unlearn.io import atomic_write_json

__all__ = ["compose_bundles", "bundle_network"]


def _config_path(root: str) -> str:
    path = find_bundle_config(root, "inference", "train")
    if path is None:
        raise FileNotFoundError(f"{root}/configs has no inference or train config to build the network from.")
    return path


def bundle_network(root: str, net_id: str = "network_def") -> torch.nn.Module:
    """Build a bundle's network from its config and load its ``models/model.pt`` (``weights_only=True``)."""
    config = _config_path(root)
    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = root
    if net_id not in parser:
        raise ValueError(f"{config} has no {net_id!r}; name the network's config id with net_id.")
    network = parser.get_parsed_content(net_id, lazy=False)
    return load_bundle_weights(network, os.path.join(root, "models", "model.pt"))


def _example_input(meta: dict[str, Any]) -> torch.Tensor | None:
    image = meta.get("network_data_format", {}).get("inputs", {}).get("image", {})
    shape = image.get("spatial_shape")
    if not shape or not all(isinstance(s, int) for s in shape):
        return None
    return torch.rand(1, int(image.get("num_channels", 1)), *shape)


def compose_bundles(
    features_bundle: str, head_bundle: str, output_dir: str, head_prefixes: list[str] | None = None,
    net_id: str = "network_def", overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``output_dir``: ``features_bundle``'s definition and feature extractor with ``head_bundle``'s head.

    Both bundles must share the network architecture (e.g. two unlearning runs of the same bundle). Neither is
    modified. The new bundle has a bumped version, a changelog entry naming both sources, ``models/model.pt``,
    ``models/model.ts`` and ``unlearning/composition.json``.

    Returns:
        the composition record.
    """
    features_net = bundle_network(features_bundle, net_id)
    head_net = bundle_network(head_bundle, net_id)
    prefixes = list(head_prefixes) if head_prefixes else list(head_prefixes_for(features_net))
    composed = compose_models(features_net, head_net, prefixes)
    record = {
        "features_from": os.path.abspath(features_bundle),
        "head_from": os.path.abspath(head_bundle),
        "head_prefixes": prefixes,
        "head_parameters": [n for n, _ in composed.named_parameters() if any(n.startswith(p) for p in prefixes)],
    }
    changelog = f"composed: feature extractor of {os.path.basename(os.path.abspath(features_bundle))}, head " \
                f"({', '.join(prefixes)}) of {os.path.basename(os.path.abspath(head_bundle))}"

    def write_extras(root: str, meta: dict[str, Any]) -> None:
        inference = os.path.join(root, "configs", "inference.json")
        configs = {"inference": inference} if os.path.isfile(inference) else {}
        export_torchscript(composed, os.path.join(root, "models", "model.ts"), meta, configs, _example_input(meta))
        os.makedirs(os.path.join(root, "unlearning"), exist_ok=True)
        atomic_write_json(record, os.path.join(root, "unlearning", "composition.json"))

    write_new_bundle(features_bundle, output_dir, composed.state_dict(), changelog, write_extras, overwrite)
    return record
