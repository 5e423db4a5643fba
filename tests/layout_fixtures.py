"""Bundles in Model Zoo data layouts other than a list of path dicts, written into a temporary folder and trained
briefly with their own config: in-memory arrays in an ``.npz`` (cardiac layout), classes made by transforms from
label-map PNGs (nucleus layout), and a datalist built by a ``$`` expression from a CSV file."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

SIZE = 16
CLASSES = 3


def _meta(root: str, inputs: int, outputs: int) -> None:
    meta = {"version": "0.1.0", "changelog": {"0.1.0": "fixture"}, "name": os.path.basename(root),
            "network_data_format": {"inputs": {"image": {"num_channels": inputs, "spatial_shape": [SIZE, SIZE]}},
                                    "outputs": {"pred": {"num_channels": outputs}}}}
    with open(os.path.join(root, "configs", "metadata.json"), "w") as f:
        json.dump(meta, f, indent=2)


def _write(root: str, config: dict, inference_keys: tuple[str, ...], inputs: int, outputs: int) -> str:
    os.makedirs(os.path.join(root, "configs"), exist_ok=True)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    with open(os.path.join(root, "configs", "train.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(root, "configs", "inference.json"), "w") as f:
        json.dump({k: config[k] for k in inference_keys}, f, indent=2)
    _meta(root, inputs, outputs)
    return root


def _trainer(loss: str, epochs: int = 1) -> dict:
    return {
        "_target_": "SupervisedTrainer", "device": "@device", "max_epochs": epochs,
        "train_data_loader": "@train_dataloader", "network": "@network", "loss_function": loss,
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.01},
    }


RUN_AND_SAVE = ["$@trainer.run()", "$torch.save(@network.state_dict(), @bundle_root + '/models/model.pt')"]


def write_cardiac_layout_bundle(root: str, n: int = 20, seed: int = 0) -> str:
    """All images and label maps in one ``.npz``; ``Subset`` over ``partition_dataset``; flat ids; an evaluator."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.2, 0.05, (n, 1, SIZE, SIZE)).astype(np.float32)
    segs = np.zeros((n, 1, SIZE, SIZE), np.int64)
    for i in range(n):  # two structures per image: a ring-like class 1 around a class 2 core
        r, c = rng.integers(4, SIZE - 4, 2)
        segs[i, 0, r - 3:r + 4, c - 3:c + 4] = 1
        segs[i, 0, r - 1:r + 2, c - 1:c + 2] = 2
        images[i, 0][segs[i, 0] == 1] += 0.4
        images[i, 0][segs[i, 0] == 2] += 0.8
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    np.savez(os.path.join(root, "data", "cardiac.npz"), images=images, segs=segs)
    transforms = [{"_target_": "EnsureTyped", "keys": ["image", "label"]},
                  {"_target_": "CastToTyped", "keys": ["image", "label"], "dtype": ["$torch.float32", "$torch.long"]}]
    config = {
        "imports": ["$import torch"],
        "bundle_root": root,
        "device": "$torch.device('cpu')",
        "dataset_file": "$@bundle_root + '/data/cardiac.npz'",
        "network_def": {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": CLASSES,
                        "channels": [8, 16], "strides": [2], "num_res_units": 1},
        "network": "$@network_def.to(@device)",
        "npz": {"_target_": "NPZDictItemDataset", "npzfile": "@dataset_file", "keys": {"images": "image", "segs": "label"}},
        "partitions": "$monai.data.partition_dataset(list(range(len(@npz))), (4, 1), shuffle=True, seed=0)",
        "train_sub": "$torch.utils.data.Subset(@npz, @partitions[0])",
        "val_sub": "$torch.utils.data.Subset(@npz, @partitions[1])",
        "train_transforms": {"_target_": "Compose", "transforms": transforms},
        "val_transforms": {"_target_": "Compose", "transforms": transforms},
        "train_dataset": {"_target_": "Dataset", "data": "@train_sub", "transform": "@train_transforms"},
        "val_dataset": {"_target_": "Dataset", "data": "@val_sub", "transform": "@val_transforms"},
        "train_dataloader": {"_target_": "DataLoader", "dataset": "@train_dataset", "batch_size": 4, "shuffle": True},
        "val_dataloader": {"_target_": "DataLoader", "dataset": "@val_dataset", "batch_size": 4},
        "trainer": _trainer("$monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)", epochs=3),
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@val_dataloader",
                      "network": "@network"},
        "run": RUN_AND_SAVE,
    }
    return _write(root, config, ("imports", "bundle_root", "device", "network_def", "network"), 1, CLASSES)


def write_nucleus_layout_bundle(root: str, per_class: int = 6, seed: int = 0) -> str:
    """Items: an RGB patch PNG, a nucleus-mask PNG and the nucleus' ``mask_value``; the transforms stack the mask as
    a fourth input channel and turn ``mask_value`` into the class (``label``), as pathology nucleus bundles do."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    items = []
    for cls in range(CLASSES):
        for i in range(per_class):
            rgb = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            r, c = rng.integers(4, SIZE - 4, 2)
            mask[r - 3:r + 3, c - 3:c + 3] = 255
            rgb[mask > 0, cls] = 230  # each class a colour of its own
            stem = os.path.join(root, "data", f"nucleus_{cls}_{i}")
            Image.fromarray(rgb).save(stem + "_image.png")
            Image.fromarray(mask).save(stem + "_mask.png")
            items.append({"image": stem + "_image.png", "label": stem + "_mask.png", "mask_value": cls + 1,
                          "site": f"site_{i % 2}"})
    with open(os.path.join(root, "data", "datalist.json"), "w") as f:
        json.dump({"training": items[1::2] + items[::4], "validation": items[2::4]}, f)
    transforms = [
        {"_target_": "LoadImaged", "keys": ["image", "label"], "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
        {"_target_": "ScaleIntensityRanged", "keys": ["image", "label"], "a_min": 0, "a_max": 255, "b_min": 0.0,
         "b_max": 1.0},
        {"_target_": "Lambda", "func": "$lambda d: dict(d, image=torch.cat([d['image'], d['label']]), "
                                       "label=torch.tensor(int(d['mask_value']) - 1))"},
        {"_target_": "EnsureTyped", "keys": ["image"], "dtype": "$torch.float32"},
    ]
    config = {
        "imports": ["$import json", "$import torch"],
        "bundle_root": root,
        "device": "$torch.device('cpu')",
        "num_classes": CLASSES,
        "network_def": {"_target_": "Classifier", "in_shape": [4, SIZE, SIZE], "classes": CLASSES,
                        "channels": [8, 16], "strides": [2, 2]},
        "network": "$@network_def.to(@device)",
        "datalist": "$json.load(open(@bundle_root + '/data/datalist.json'))",
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": transforms},
            "dataset": {"_target_": "Dataset", "data": "$@datalist['training']", "transform": "@train#preprocessing"},
        },
        "validate": {
            "preprocessing": {"_target_": "Compose", "transforms": transforms},
            "dataset": {"_target_": "Dataset", "data": "$@datalist['validation']", "transform": "@validate#preprocessing"},
        },
        "train_dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 4, "shuffle": True},
        "trainer": _trainer("$torch.nn.CrossEntropyLoss()", epochs=8),
        "run": RUN_AND_SAVE,
    }
    return _write(root, config, ("imports", "bundle_root", "device", "network_def", "network"), 4, CLASSES)


def write_csv_layout_bundle(root: str, per_class_device: int = 5, seed: int = 0) -> str:
    """A classification bundle whose datalist a ``$`` expression builds from a CSV file (relative paths)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    rows = []
    for device in ("scanner_a", "scanner_b"):
        for cls in range(CLASSES):
            for i in range(per_class_device):
                image = rng.normal(0.2, 0.05, (SIZE, SIZE)).astype(np.float32)
                image[2 + 4 * cls:6 + 4 * cls, 3:12] += 0.6 + (0.2 if device == "scanner_b" else 0.0)
                name = f"data/{device}_{cls}_{i}.npy"
                np.save(os.path.join(root, name), image)
                rows.append({"path": name, "diagnosis": cls, "scanner": device, "split": "val" if i == 0 else "train"})
    with open(os.path.join(root, "data", "cases.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    row_to_item = ("dict(image=@bundle_root + '/' + r['path'], label=int(r['diagnosis']), device=r['scanner'])")
    transforms = [{"_target_": "LoadImaged", "keys": "image", "image_only": True},
                  {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
                  {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"}]
    config = {
        "imports": ["$import csv", "$import torch"],
        "bundle_root": root,
        "device": "$torch.device('cpu')",
        "num_classes": CLASSES,
        "network_def": {"_target_": "Classifier", "in_shape": [1, SIZE, SIZE], "classes": CLASSES,
                        "channels": [8, 16], "strides": [2, 2]},
        "network": "$@network_def.to(@device)",
        "rows": "$list(csv.DictReader(open(@bundle_root + '/data/cases.csv')))",
        "train_datalist": f"$[{row_to_item} for r in @rows if r['split'] == 'train']",
        "val_datalist": f"$[{row_to_item} for r in @rows if r['split'] == 'val']",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "train_dataset": {"_target_": "Dataset", "data": "@train_datalist", "transform": "@preprocessing"},
        "train_dataloader": {"_target_": "DataLoader", "dataset": "@train_dataset", "batch_size": 6, "shuffle": True},
        "trainer": _trainer("$torch.nn.CrossEntropyLoss()", epochs=6),
        "run": RUN_AND_SAVE,
    }
    return _write(root, config, ("imports", "bundle_root", "device", "network_def", "network"), 1, CLASSES)


def train_with_own_config(root: str) -> None:
    """Train the bundle with its own ``train.json`` (what ``python -m monai.bundle run`` does), in this process."""
    import torch
    from monai.bundle import ConfigWorkflow

    torch.manual_seed(0)
    workflow = ConfigWorkflow(config_file=os.path.join(root, "configs", "train.json"), workflow_type=None,
                              meta_file=os.path.join(root, "configs", "metadata.json"), bundle_root=root,
                              logging_file=False)
    workflow.initialize()
    workflow.run()
