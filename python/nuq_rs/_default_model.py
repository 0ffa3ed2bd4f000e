"""The embedded default model: a small CNN trained on real Fashion-MNIST.

It gives ``nuq-rs quantize`` (with no input) and the quality benchmarks a real
trained network to work on, small enough (~0.8 MB of fp32 weights) to ship
inside the package. The weights are trained by ``scripts/train_fashion_cnn.py``.

Example::

    >>> from nuq_rs._default_model import FashionCNN, load_default_state_dict
    >>> model = FashionCNN()
    >>> model.load_state_dict(load_default_state_dict())
    <All keys matched successfully>
"""

from __future__ import annotations

import gzip
import importlib.resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "FASHION_MNIST_DIR",
    "DESCRIPTION",
    "FashionCNN",
    "evaluate",
    "load_default_state_dict",
    "load_fashion_mnist",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: One line saying what the embedded model is (printed by the command line).
DESCRIPTION = "a 4-layer CNN (2 conv + 2 linear, 206k weights) trained on Fashion-MNIST"

_WEIGHTS_FILE = "fashion_cnn.safetensors"
_IDX_MAGIC = {"images": 2051, "labels": 2049}
# Normalisation constants of the Fashion-MNIST training set (pixel mean / std).
_PIXEL_MEAN = 0.2860
_PIXEL_STD = 0.3530


class FashionCNN(nn.Module):
    """Two 3x3 conv layers with max pooling, then a 1568 -> 128 -> 10 MLP.

    Input: ``(batch, 1, 28, 28)`` float images normalised as
    :func:`load_fashion_mnist` returns them. Output: ``(batch, 10)`` logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def load_default_state_dict() -> dict[str, torch.Tensor]:
    """Return the shipped fp32 weights of :class:`FashionCNN` (read from package data)."""
    from safetensors.torch import load

    resource = importlib.resources.files("nuq_rs") / "data" / _WEIGHTS_FILE
    return load(resource.read_bytes())


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """Parse one gzipped IDX file (big-endian header, then raw uint8 data)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST file {path} not found; install the Debian package "
            "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist)"
        )
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw, dtype=">u4", count=2)
    if int(header[0]) != _IDX_MAGIC[kind]:
        raise ValueError(f"{path}: bad IDX magic {int(header[0])}, expected {_IDX_MAGIC[kind]}")
    count = int(header[1])
    if kind == "labels":
        return np.frombuffer(raw, dtype=np.uint8, offset=8, count=count)
    rows, cols = (int(v) for v in np.frombuffer(raw, dtype=">u4", count=2, offset=8))
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16, count=count * rows * cols)
    return pixels.reshape(count, rows, cols)


def load_fashion_mnist(
    split: str = "test", root: Path | str = FASHION_MNIST_DIR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the real Fashion-MNIST ``"train"`` (60 000) or ``"test"`` (10 000) split.

    Returns ``(images, labels)``: float32 ``(n, 1, 28, 28)`` normalised with the
    training-set mean/std, and int64 ``(n,)`` class indices.
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    prefix = prefixes[split]
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", "images")
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", "labels")
    if len(images) != len(labels):
        raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = ((x - _PIXEL_MEAN) / _PIXEL_STD).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` on ``(images, labels)``, in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)
