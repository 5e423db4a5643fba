"""Tiny segmentation data, networks and a tiny 3D segmentation bundle in the Model Zoo's JSON layout, written into a
temporary folder. Shared by the segmentation tests."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from monai.networks.nets import UNet

from tests.bundle_fixtures import UNLEARN_CONFIG, tree_digest  # noqa: F401  (re-exported for the tests)

VOLUME_SIZE = 12
SEG_CLASSES = 3
SEG_DEVICES = ("scanner_a", "scanner_b", "scanner_c")

UNET_3D = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": SEG_CLASSES,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}
SEG_TRANSFORMS = [
    {"_target_": "LoadImaged", "keys": ["image", "label"], "image_only": True},
    {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"], "channel_dim": "no_channel"},
    {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    {"_target_": "EnsureTyped", "keys": "label", "dtype": "$torch.long"},
]


def tiny_unet(spatial_dims: int = 2, classes: int = SEG_CLASSES, seed: int = 0) -> UNet:
    """A small MONAI UNet (one down-sampling level)."""
    torch.manual_seed(seed)
    return UNet(spatial_dims, 1, classes, channels=(4, 8), strides=(2,), num_res_units=0)


def toy_volumes(n: int, size: int = 16, spatial_dims: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, 1, *S)`` and label maps ``(n, 1, *S)``: a dim square/cube of class 1 and a bright one of class 2
    at random places on a noisy background (class 0)."""
    rng = np.random.default_rng(seed)
    shape = (size,) * spatial_dims
    images = rng.normal(0.1, 0.03, (n, 1, *shape)).astype(np.float32)
    labels = np.zeros((n, 1, *shape), dtype=np.int64)
    side = max(size // 4, 2)
    for i in range(n):
        for cls, value in ((1, 0.45), (2, 0.85)):
            corner = rng.integers(0, size - side, spatial_dims)
            region = (i, 0, *[slice(int(c), int(c) + side) for c in corner])
            images[region] = value + rng.normal(0, 0.03)
            labels[region] = cls
    return torch.from_numpy(images.clip(0, 1)), torch.from_numpy(labels)


def train_toy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 60, lr: float = 0.02,
              seed: int = 0) -> torch.nn.Module:
    """Fit ``net`` to the toy data with Adam and cross-entropy; returns it in eval mode."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr)
    net.train()
    for _ in range(steps):
        for idx in torch.randperm(len(images)).split(8):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(images[idx]), labels[idx, 0]).backward()
            optimizer.step()
    return net.eval()


def make_volumes(root: str, per_device: int = 3, seed: int = 0) -> list[dict]:
    """Write small 3D ``.npy`` image/label pairs, one case each, each device with its own contrast."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    items = []
    n = 0
    for d, device in enumerate(SEG_DEVICES):
        for _ in range(per_device):
            image, label = toy_volumes(1, VOLUME_SIZE, 3, seed=int(rng.integers(1 << 30)))
            image = (image[0, 0].numpy() * (1.0 - 0.1 * d)).astype(np.float32)
            case = f"case_{n:02d}"
            image_path = os.path.join(root, "images", f"{case}.npy")
            label_path = os.path.join(root, "labels", f"{case}.npy")
            np.save(image_path, image)
            np.save(label_path, label[0, 0].numpy().astype(np.uint8))
            items.append({"image": image_path, "label": label_path, "case": case, "device": device})
            n += 1
    return items


def train_volume_weights(items: list[dict], path: str, steps: int = 40, seed: int = 0) -> None:
    """Train the fixture's 3D UNet on ``items`` and save its state dict at ``path``."""
    torch.manual_seed(seed)
    net = UNet(**{k: v for k, v in UNET_3D.items() if k != "_target_"})
    x = torch.stack([torch.from_numpy(np.load(it["image"]))[None] for it in items])
    y = torch.stack([torch.from_numpy(np.load(it["label"]).astype(np.int64))[None] for it in items])
    train_toy(net, x, y, steps=steps, lr=0.02, seed=seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(net.state_dict(), path)


def write_segmentation_bundle(root: str, items: list[dict], train_steps: int = 40) -> str:
    """A 3D segmentation bundle laid out like the zoo's: nested ``train#...``/``validate#...`` sections, a
    datalist whose labels are label-map paths, and a sliding-window validation inferer."""
    train = [it for i, it in enumerate(items) if i % 3]
    val = [it for i, it in enumerate(items) if not i % 3]
    os.makedirs(os.path.join(root, "configs"), exist_ok=True)
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump({"training": train, "validation": val}, f)
    config = {
        "imports": ["$import json", "$import torch"],
        "bundle_root": root,
        "device": "$torch.device('cpu')",
        "num_classes": SEG_CLASSES,
        "network_def": UNET_3D,
        "network": "$@network_def.to(@device)",
        "datalist": "$json.load(open(@bundle_root + '/datalist.json'))",
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": SEG_TRANSFORMS + [
                {"_target_": "RandSpatialCropd", "keys": ["image", "label"], "roi_size": [8, 8, 8]}]},
            "dataset": {"_target_": "Dataset", "data": "$@datalist['training']", "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2, "shuffle": True},
            "trainer": {
                "_target_": "SupervisedTrainer", "device": "@device", "max_epochs": 2,
                "train_data_loader": "@train#dataloader", "network": "@network",
                "loss_function": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
                "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
            },
        },
        "validate": {
            "preprocessing": {"_target_": "Compose", "transforms": SEG_TRANSFORMS},
            "dataset": {"_target_": "Dataset", "data": "$@datalist['validation']", "transform": "@validate#preprocessing"},
            "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [8, 8, 8], "sw_batch_size": 2},
        },
        "run": ["$@train#trainer.run()"],
    }
    with open(os.path.join(root, "configs", "train.json"), "w") as f:
        json.dump(config, f, indent=2)
    inference = {k: config[k] for k in ("imports", "bundle_root", "device", "network_def", "network")}
    with open(os.path.join(root, "configs", "inference.json"), "w") as f:
        json.dump(inference, f, indent=2)
    meta = {"version": "0.3.0", "changelog": {"0.3.0": "fixture"}, "name": "fixture segmenter",
            "network_data_format": {"inputs": {"image": {"num_channels": 1, "spatial_shape": [VOLUME_SIZE] * 3}},
                                    "outputs": {"pred": {"num_channels": SEG_CLASSES}}}}
    with open(os.path.join(root, "configs", "metadata.json"), "w") as f:
        json.dump(meta, f, indent=2)
    train_volume_weights(train, os.path.join(root, "models", "model.pt"), steps=train_steps)
    return root
