"""Quantization quality of nuq vs the baselines on real trained weights.

For every weight tensor (ndim >= 2) of the MTCNN face detector (pnet, rnet,
onet; facenet-pytorch's pretrained weights) and of the shipped Fashion-MNIST
CNN: MSE and SQNR at 2, 3, 4 and 8 bits for nuq, uniform min-max
round-to-nearest and ACIQ clipped uniform at the same bits and granularity
(tensor, channel, 64 consecutive weights), and NF4 (block 64) at 4 bits. Every cell shows
the bits per weight with metadata, so unequal metadata is visible. Then the
top-1 test accuracy of the CNN on real Fashion-MNIST, fp32 and quantized.

    pip install --no-deps facenet-pytorch==2.6.0   # weights only; never imported
    python benches/quality_table.py [--out quality.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import nuq_rs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BITS = (2, 3, 4, 8)
GROUP = 64
GRANULARITIES = ("tensor", "channel", "group")
METHODS = ("nuq", "min-max", "ACIQ", "NF4")


@dataclass
class Totals:
    """Sums over the tensors of one model for one (method, bits, granularity)."""

    sq_err: float = 0.0
    energy: float = 0.0
    numel: int = 0
    bits: float = 0.0

    def add(self, x: np.ndarray, deq: np.ndarray, bits_per_weight: float) -> None:
        x64 = x.astype(np.float64)
        self.sq_err += float(np.sum((x64 - deq.astype(np.float64)) ** 2))
        self.energy += float(np.sum(x64**2))
        self.numel += x.size
        self.bits += bits_per_weight * x.size

    def cell(self) -> str:
        if not self.numel:
            return "–"
        sqnr = 10 * np.log10(self.energy / self.sq_err) if self.sq_err else float("inf")
        return f"{sqnr:.2f} dB ({self.sq_err / self.numel:.2e}) {self.bits / self.numel:.2f}b"


def mtcnn_state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    """pnet/rnet/onet weights read from facenet-pytorch's data files (not imported)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the MTCNN weights: pip install --no-deps facenet-pytorch==2.6.0")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return {n: torch.load(data / f"{n}.pt", weights_only=True) for n in ("pnet", "rnet", "onet")}


def default_model_module():
    """nuq_rs._default_model, or the repository copy when the install predates it."""
    try:
        from nuq_rs import _default_model
    except ImportError:
        path = REPO / "python" / "nuq_rs" / "_default_model.py"
        spec = importlib.util.spec_from_file_location("_nuq_default_model", path)
        _default_model = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_default_model)
    return _default_model


def cnn_state_dict(dm) -> dict[str, torch.Tensor]:
    try:
        return dm.load_default_state_dict()
    except (FileNotFoundError, ModuleNotFoundError):
        return load_file(str(REPO / "python" / "nuq_rs" / "data" / "fashion_cnn.safetensors"))


def weight_tensors(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The tensors nuq quantizes by default: floating, 2+ dimensions."""
    return {
        k: v.detach().float().numpy()
        for k, v in sd.items()
        if v.is_floating_point() and v.ndim >= 2
    }


def group_width(numel: int) -> int:
    """Width of the flat blocks of the "group" cells: the largest divisor of the
    weight count that is at most GROUP (so no padding is needed), or 0 when
    that is below GROUP / 4 (small groups would spend too much on scales)."""
    width = max(d for d in range(1, GROUP + 1) if numel % d == 0)
    return width if 4 * width >= GROUP else 0


def as_blocks(x: np.ndarray, granularity: str) -> tuple[np.ndarray, str, int | None]:
    """The array, granularity and group size every method gets for one table cell.

    "group" means blocks of consecutive weights in memory order, as NF4 blocks
    them: the tensor is viewed as (numel / width, width) and quantized per row
    of that view, which equals nuq's per-row groups when the row length is a
    multiple of the width. The width is GROUP when it divides the weight count,
    else the largest divisor below it (:func:`group_width`): NF4 zero-pads its
    last block instead, and every cell counts what its method stores, padding
    and scales included. Tensors without such a divisor go per channel.
    """
    if granularity != "group":
        return x, granularity, None
    width = group_width(x.size)
    if not width:
        return x, "channel", None
    return x.reshape(-1, width), "group", width


def quantize_all(name: str, x: np.ndarray, bits: int, granularity: str) -> dict[str, tuple]:
    """Dequantized array and bits/weight of every method for one tensor."""
    view, gran, g = as_blocks(x, granularity)
    qt = nuq_rs.quantize_tensor(view, bits, granularity=gran, group_size=g)
    deq = np.asarray(qt.dequantize(), dtype=np.float32)
    assert deq.shape == view.shape, (name, deq.shape, view.shape)
    own_mse = float(np.mean((view.astype(np.float64) - deq) ** 2))
    assert abs(own_mse - qt.mse) <= 1e-6 * own_mse + 1e-15, (name, own_mse, qt.mse)
    out = {
        "nuq": (deq, qt.bits_per_weight),
        "min-max": baselines.uniform_minmax(view, bits, gran, g),
        "ACIQ": baselines.aciq(view, bits, gran, g),
    }
    if bits == 4 and granularity == "group":
        out["NF4"] = baselines.nf4(x, GROUP)
    return {k: (deq.reshape(x.shape), bpw) for k, (deq, bpw) in out.items()}


def quality_table(model: str, tensors: dict[str, np.ndarray]) -> list[str]:
    narrower = {k: group_width(x.size) for k, x in tensors.items() if x.size % GROUP}
    fallback = [k for k, w in narrower.items() if not w]
    narrower = {k: w for k, w in narrower.items() if w}
    n = sum(x.size for x in tensors.values())
    lines = [
        f"### {model}: {len(tensors)} weight tensors, {n} weights",
        "",
        "Cells: SQNR (MSE) bits-per-weight incl. metadata, over all weight tensors. "
        f"Group {GROUP}: {GROUP} consecutive weights in memory order (as NF4 blocks).",
    ]
    if narrower:
        widths = ", ".join(f"{k} ({w})" for k, w in narrower.items())
        lines.append(
            f"Group {GROUP}: weight count not a multiple of {GROUP}, so blocks of its largest "
            f"divisor below {GROUP} for every method except NF4 (zero-padded blocks): {widths}."
        )
    if fallback:
        lines.append(
            f"Group {GROUP}: no divisor of the weight count in [{GROUP // 4}, {GROUP}], so per "
            f"channel for every method except NF4: {', '.join(fallback)}."
        )
    lines += ["", "| bits | granularity | " + " | ".join(METHODS) + " |"]
    lines.append("|---|---|" + "---|" * len(METHODS))
    for bits in BITS:
        for gran in GRANULARITIES:
            totals = {m: Totals() for m in METHODS}
            for name, x in tensors.items():
                for method, (deq, bpw) in quantize_all(name, x, bits, gran).items():
                    totals[method].add(x, deq, bpw)
            label = f"group {GROUP}" if gran == "group" else gran
            cells = " | ".join(totals[m].cell() for m in METHODS)
            lines.append(f"| {bits} | {label} | {cells} |")
    return lines + [""]


def accuracy_table(dm) -> list[str]:
    """Top-1 test accuracy of the CNN with weights from each method."""
    sd = cnn_state_dict(dm)
    images, labels = dm.load_fashion_mnist("test")
    model = dm.FashionCNN()
    model.load_state_dict(sd)
    fp32 = dm.evaluate(model, images, labels)
    lines = [
        "### Fashion-MNIST CNN: top-1 test accuracy (10 000 real test images)",
        "",
        f"fp32: **{100 * fp32:.2f}%**",
        "",
        "| bits | granularity | nuq | min-max | ACIQ |",
        "|---|---|---|---|---|",
    ]
    for bits in (8, 4, 3):
        for gran in ("tensor", "channel"):
            q = nuq_rs.quantize_state_dict(sd, bits, granularity=gran)
            accs = [_accuracy(dm, model, q.dequantize(), images, labels)]
            for fn in (baselines.uniform_minmax, baselines.aciq):
                deq = {
                    k: torch.from_numpy(fn(v.numpy(), bits, gran)[0]) if v.ndim >= 2 else v
                    for k, v in sd.items()
                }
                accs.append(_accuracy(dm, model, deq, images, labels))
            cells = " | ".join(f"{100 * a:.2f}%" for a in accs)
            lines.append(f"| {bits} | {gran} | {cells} |")
    return lines + [""]


def _accuracy(dm, model, sd, images, labels) -> float:
    model.load_state_dict(sd)
    return dm.evaluate(model, images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dm = default_model_module()
    models = {f"MTCNN {k}": weight_tensors(sd) for k, sd in mtcnn_state_dicts().items()}
    models["Fashion-MNIST CNN"] = weight_tensors(cnn_state_dict(dm))
    lines = ["## nuq-rs quantization quality", ""]
    print("\n".join(lines), flush=True)
    for model, tensors in models.items():
        section = quality_table(model, tensors)
        print("\n".join(section), flush=True)
        lines += section
    section = accuracy_table(dm)
    print("\n".join(section), flush=True)
    lines += section
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
