"""Forward pass of real CNNs on packed weights vs the same CNNs in fp32.

Models: the embedded Fashion-MNIST CNN (real test images) and the MTCNN ONet
(pretrained weights from the facenet-pytorch wheel, 48x48 crops of
``skimage.data.lfw_subset``, tiled to the batch size). Each is run through
``nuq_rs.nn.quantize_model`` at 4 bits per tensor and 3 bits per channel; for each
batch size the table gives, all measured in this process under
``torch.inference_mode()`` (one warm-up call, then the best of --repeats):

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
import sys
import time
from pathlib import Path

import torch
from torch import nn

import nuq_rs
import nuq_rs.nn as qnn
from nuq_rs import _default_model as default

# The rebuilt MTCNN nets and the weights' location live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CONFIGS = [("4", "tensor", {"bits": 4}), ("3", "channel", {"bits": 3, "granularity": "channel"})]


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
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


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


def tiled(images: torch.Tensor, batch: int) -> torch.Tensor:
    """The first ``batch`` images, repeating the set if it is smaller."""
    reps = -(-batch // len(images))
    return images.repeat(reps, *([1] * (images.ndim - 1)))[:batch].contiguous()


def bench_model(name: str, model: nn.Module, images: torch.Tensor, args) -> None:
    quantized = [(bits, gran, qnn.quantize_model(model, **kw)[0]) for bits, gran, kw in CONFIGS]
    fp32_bytes = state_dict_bytes(model)
    for batch in args.batches:
        x = tiled(images, batch)
        t_fp32 = best_of(model, x, args.repeats)
        for bits, gran, qmodel in quantized:
            t = best_of(qmodel, x, args.repeats)
            print(
                f"| {name} | {batch} | {bits} | {gran} | {t * 1e3:.2f} | {t_fp32 * 1e3:.2f} "
                f"| {t_fp32 / t:.2f}x | {state_dict_bytes(qmodel):,} | {fp32_bytes:,} |",
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
        "| model | batch | bits | gran | nuq ms | fp32 ms | fp32 / nuq "
        "| nuq state dict B | fp32 state dict B |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, load in (("fashion-cnn", fashion_cnn), ("mtcnn-onet", mtcnn_onet)):
        try:
            model, images = load()
        except (FileNotFoundError, ImportError) as e:
            print(f"| {name} | skipped: {e} |" + " |" * 7)
            continue
        bench_model(name, model, images, args)


if __name__ == "__main__":
    main()
