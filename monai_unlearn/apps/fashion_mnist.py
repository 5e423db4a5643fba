"""FashionMNIST read from the Debian package ``dataset-fashion-mnist``, with no download at run time.

The package installs the four idx files of the original release under
``/usr/share/datasets/fashion-mnist``. This module parses them with numpy and gzip only, checking the
magic numbers and the sizes so that a truncated or corrupt file raises a clear error instead of returning
garbage.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_INSTALL",
    "read_idx",
    "load_fashion_mnist",
    "fashion_mnist_dataset",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where the Debian package ``dataset-fashion-mnist`` puts the idx files."""

FASHION_MNIST_INSTALL = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"
"""The command that installs the data (or run ``scripts/install_data.sh``)."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Class names in label order (label ``i`` is ``FASHION_MNIST_CLASSES[i]``)."""

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# idx type codes: (numpy big-endian dtype, bytes per element)
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """Read a file, decompressing it when its name ends in ``.gz``.

    Raises:
        ValueError: when the gzip stream is truncated or corrupt.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable idx file (truncated or corrupt gzip stream: {e}).") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an idx file (the MNIST container format), optionally gzip-compressed.

    The header is two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes; the data follow in C order, big-endian.

    Args:
        path: path to an ``*-ubyte`` or ``*-ubyte.gz`` file.

    Returns:
        the array with its native-endian dtype and the shape stored in the header.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the magic number, the type code or the payload size is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file {path} not found.")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path} is too short to be an idx file ({len(raw)} bytes).")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{path} has a bad idx magic number 0x{int.from_bytes(raw[:4], 'big'):08x} "
            "(expected 0x0000TTDD with a known type code TT and DD >= 1 dimensions)."
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path} is truncated inside its idx header.")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got != expected:
        raise ValueError(
            f"{path} holds {got} data bytes but its header {tuple(shape)} needs {expected}: the file is "
            "truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of FashionMNIST as numpy arrays.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Returns:
        ``(images, labels)``: uint8 images of shape ``(N, 28, 28)`` and int64 labels of shape ``(N,)`` in
        ``[0, 9]``.

    Raises:
        ValueError: for an unknown split, or files that are corrupt or do not match each other.
        FileNotFoundError: when the files are missing; the message gives the install command.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(_SPLIT_PREFIX)}, got {split!r}.")
    root = Path(root)
    prefix = _SPLIT_PREFIX[split]
    paths = []
    for kind in ("images-idx3", "labels-idx1"):
        base = root / f"{prefix}-{kind}-ubyte"
        found = [p for p in (base.with_name(base.name + ".gz"), base) if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"FashionMNIST file {base.name}[.gz] not found in {root}. Install the data with "
                f"`{FASHION_MNIST_INSTALL}` (or run scripts/install_data.sh), or pass `root=` pointing at the "
                "folder that holds the idx files."
            )
        paths.append(found[0])
    images = read_idx(paths[0])
    labels = read_idx(paths[1])
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{paths[0]} should hold uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}."
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{paths[1]} should hold uint8 labels of shape (N,), got {labels.dtype} {labels.shape}.")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{paths[0]} has {images.shape[0]} images but {paths[1]} has {labels.shape[0]} labels.")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{paths[1]} holds label {int(labels.max())}, outside [0, {len(FASHION_MNIST_CLASSES) - 1}].")
    return images, labels.astype(np.int64)


def fashion_mnist_dataset(
    split: str = "train", root: str | os.PathLike = FASHION_MNIST_DIR, limit: int | None = None
) -> TensorDataset:
    """FashionMNIST as a ``TensorDataset`` of float images in ``[0, 1]`` and int64 labels.

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder holding the idx files (see :func:`load_fashion_mnist`).
        limit: keep only the first ``limit`` samples (handy for tests and quick runs); ``None`` keeps all.

    Returns:
        a dataset whose items are ``(image, label)`` with image a float32 tensor of shape ``(1, 28, 28)``.

    Raises:
        ValueError: for an unknown split or corrupt files.
        FileNotFoundError: when the data is not installed.
    """
    images, labels = load_fashion_mnist(split, root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels)
    return TensorDataset(x, y)
