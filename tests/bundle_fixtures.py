"""Tiny classification bundles written into a temporary folder: one in the Model Zoo's JSON layout, one in the
zoo templates' YAML layout. Shared by the bundle tests."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
import yaml
from monai.networks.nets import Classifier

IMAGE_SIZE = 16
NUM_CLASSES = 3
DEVICES = ("scanner_a", "scanner_b", "scanner_c")
UNLEARN_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundles", "unlearn", "configs", "unlearn.json")

NETWORK_DEF = {
    "_target_": "Classifier",
    "in_shape": [1, IMAGE_SIZE, IMAGE_SIZE],
    "classes": NUM_CLASSES,
    "channels": [8, 16],
    "strides": [2, 2],
}
TRANSFORMS = [
    {"_target_": "LoadImaged", "keys": "image", "image_only": True},
    {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
    {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
]


def overlay_parser(bundle: str, config: str = "train.json", default_regime: bool = False, **overrides):
    """The merged config ``monai.bundle run unlearn`` builds: the bundle's ``config`` with the unlearn overlay, its
    metadata and ``bundle_root``, quiet, eps 0.3, then ``overrides`` (config ids, ``#`` for nested keys).

    Runs take fixed passes (``unlearn_regime: fixed``) so that a test of another feature sees the passes it asks
    for; ``default_regime=True`` keeps the overlay's default (``auto``), for the tests of that default."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.path.join(bundle, "configs", config), UNLEARN_CONFIG])
    parser.read_meta(os.path.join(bundle, "configs", "metadata.json"))
    parser["bundle_root"] = bundle
    overrides.setdefault("unlearn_progress", False)
    overrides.setdefault("unlearn_params#eps", 0.3)
    if not default_regime:
        overrides.setdefault("unlearn_regime", "fixed")
    for key, value in overrides.items():
        parser[key] = value
    return parser


def make_images(root: str, per_class_device: int = 8, seed: int = 0) -> list[dict]:
    """Write small ``.npy`` images: each class a bright square in its own place, each device its own contrast."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    items = []
    places = [(2, 2), (2, 9), (9, 5)]
    for d, device in enumerate(DEVICES):
        for label, (r, c) in enumerate(places):
            for i in range(per_class_device):
                image = rng.normal(0.2, 0.08, (IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
                image[r : r + 5, c : c + 5] += 0.5 + 0.15 * d
                path = os.path.join(root, "images", f"{device}_{label}_{i}.npy")
                np.save(path, image.clip(0, 1))
                items.append({"image": path, "label": label, "device": device})
    return items


def train_weights(items: list[dict], path: str, epochs: int = 25, seed: int = 0) -> None:
    """Train the fixture network on ``items`` and save its state dict at ``path``."""
    torch.manual_seed(seed)
    net = Classifier(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"})
    x = torch.stack([torch.from_numpy(np.load(it["image"]))[None] for it in items])
    y = torch.tensor([it["label"] for it in items])
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(16):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            optimizer.step()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(net.state_dict(), path)


def split(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """Every fourth item is validation data."""
    return [it for i, it in enumerate(items) if i % 4], [it for i, it in enumerate(items) if not i % 4]


def write_json_zoo_bundle(root: str, items: list[dict]) -> str:
    """A bundle laid out like most Model Zoo bundles: nested ``train#...`` / ``validate#...`` sections."""
    train, val = split(items)
    os.makedirs(os.path.join(root, "configs"), exist_ok=True)
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump({"training": train, "validation": val}, f)
    config = {
        "imports": ["$import json", "$import torch"],
        "bundle_root": root,
        "device": "$torch.device('cpu')",
        "num_classes": NUM_CLASSES,
        "network_def": NETWORK_DEF,
        "network": "$@network_def.to(@device)",
        "datalist": "$json.load(open(@bundle_root + '/datalist.json'))",
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": TRANSFORMS + [
                {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0}]},
            "dataset": {"_target_": "Dataset", "data": "$@datalist['training']", "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 8, "shuffle": True},
            "handlers": [{"_target_": "StatsHandler", "name": "fixture_train_stats", "tag_name": "train_loss",
                          "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}],
            "trainer": {
                "_target_": "SupervisedTrainer", "device": "@device", "max_epochs": 2,
                "train_data_loader": "@train#dataloader", "network": "@network", "train_handlers": "@train#handlers",
                "loss_function": "$torch.nn.CrossEntropyLoss()",
                "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
            },
        },
        "validate": {
            "preprocessing": {"_target_": "Compose", "transforms": TRANSFORMS},
            "dataset": {"_target_": "Dataset", "data": "$@datalist['validation']", "transform": "@validate#preprocessing"},
        },
        "run": ["$@train#trainer.run()"],
    }
    with open(os.path.join(root, "configs", "train.json"), "w") as f:
        json.dump(config, f, indent=2)
    inference = {k: config[k] for k in ("imports", "bundle_root", "device", "network_def", "network")}
    with open(os.path.join(root, "configs", "inference.json"), "w") as f:
        json.dump(inference, f, indent=2)
    _write_meta(root)
    train_weights(train, os.path.join(root, "models", "model.pt"))
    return root


def write_yaml_template_bundle(root: str, items: list[dict]) -> str:
    """A bundle laid out like the zoo's classification template: flat ids, YAML, partitioned datalist."""
    os.makedirs(os.path.join(root, "configs"), exist_ok=True)
    with open(os.path.join(root, "train_samples.json"), "w") as f:
        json.dump(items, f)
    config = {
        "imports": ["$import os", "$import json", "$import datetime", "$import torch"],
        "image": "$monai.utils.CommonKeys.IMAGE",
        "label": "$monai.utils.CommonKeys.LABEL",
        "num_classes": NUM_CLASSES,
        "device": "$torch.device('cpu')",
        "bundle_root": root,
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "results_dir": "$@bundle_root + '/results'",
        "output_dir": "$datetime.datetime.now().strftime(@results_dir + '/output_%y%m%d_%H%M%S')",
        "network_def": NETWORK_DEF,
        "network": "$@network_def.to(@device)",
        "data_json": "$@bundle_root + '/train_samples.json'",
        "data_dict": "$json.load(open(@data_json, 'r', encoding='utf8'))",
        "partitions": "$monai.data.partition_dataset(@data_dict, (3, 1), shuffle=True, seed=0)",
        "train_sub": "$@partitions[0]",
        "val_sub": "$@partitions[1]",
        "base_transforms": TRANSFORMS,
        "val_preprocessing": {"_target_": "Compose", "transforms": "$@base_transforms"},
        "train_dataset": {"_target_": "Dataset", "data": "@train_sub", "transform": "@val_preprocessing"},
        "val_dataset": {"_target_": "Dataset", "data": "@val_sub", "transform": "@val_preprocessing"},
        "lossfn": {"_target_": "torch.nn.CrossEntropyLoss"},
        "run": ["$print('training is not part of this fixture')"],
    }
    with open(os.path.join(root, "configs", "train.yaml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    with open(os.path.join(root, "configs", "inference.yaml"), "w") as f:
        yaml.safe_dump({k: config[k] for k in ("imports", "device", "bundle_root", "network_def", "network")}, f)
    _write_meta(root)
    from monai.data import partition_dataset

    train_weights(partition_dataset(items, (3, 1), shuffle=True, seed=0)[0], os.path.join(root, "models", "model.pt"))
    return root


def _write_meta(root: str) -> None:
    meta = {"version": "0.2.0", "changelog": {"0.2.0": "fixture"}, "name": "fixture classifier",
            "network_data_format": {"inputs": {"image": {"num_channels": 1, "spatial_shape": [IMAGE_SIZE, IMAGE_SIZE]}},
                                    "outputs": {"pred": {"num_channels": NUM_CLASSES}}}}
    with open(os.path.join(root, "configs", "metadata.json"), "w") as f:
        json.dump(meta, f, indent=2)


def tree_digest(root: str) -> dict[str, str]:
    """SHA-256 of every file under ``root``, to prove a bundle was not modified."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests
