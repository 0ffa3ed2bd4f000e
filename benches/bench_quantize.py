"""Quantization throughput of nuq_rs on a ~150M-parameter state dict.

Shapes: every conv/fc weight of ResNet-50 (25.5M) and the weight matrices of
GPT-2 small (wte 50257x768, wpe 1024x768, 12 x attn c_attn/c_proj and mlp
c_fc/c_proj; 124M). Values: seeded Gaussian/Laplace mixtures in float32 with
a per-tensor mixing weight and 1/sqrt(fan_in) scale. Reported, all measured in
this run (medians of --repeats):

- nuq params/s for 4 bits at tensor, channel and group-128 granularity, with the
  paper's Lloyd–Max codebook and with the fitted one, and at the default;
- ratio vs (a), the NumPy/SciPy reference of the same algorithm
  (benches/reference_numpy.py), timed on the same subset of tensors;
- ratio vs (b), the memory-read floor ``np.sum`` over the same tensors, timed
  in turn with nuq (np.sum, nuq, np.sum, nuq, ...) so that host noise that
  drifts during the run hits both alike: the median of the per-pair ratios;
- peak memory beyond the input (VmHWM in a fresh subprocess) against the
  largest tensor's fp32 size.

    python benches/bench_quantize.py [--quick] [--repeats 5] [--ref-params 4e6]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import nuq_rs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_numpy  # noqa: E402

BITS = 4
GROUP = 128
SEED = 1234
PAPER = {"codebook": "lloyd-max"}
CONFIGS = {
    "tensor": {"granularity": "tensor"} | PAPER,
    "channel": {"granularity": "channel"} | PAPER,
    f"group {GROUP}": {"group_size": GROUP} | PAPER,
    # The fitted codebook (the default since issue 19), at the same layouts.
    "tensor fitted": {"granularity": "tensor"},
    "channel fitted": {"granularity": "channel"},
    f"group {GROUP} fitted": {"group_size": GROUP},
    "default (group 64 fitted)": {},
}


def resnet50_shapes(stages: int = 4) -> dict[str, tuple[int, ...]]:
    """Conv and fc weight shapes of torchvision's ResNet-50 (first ``stages`` stages)."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}
    inplanes = 64
    for s, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        if s >= stages:
            break
        for b in range(blocks):
            p = f"layer{s + 1}.{b}."
            shapes[p + "conv1.weight"] = (planes, inplanes, 1, 1)
            shapes[p + "conv2.weight"] = (planes, planes, 3, 3)
            shapes[p + "conv3.weight"] = (planes * 4, planes, 1, 1)
            if b == 0:
                shapes[p + "downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
            inplanes = planes * 4
    shapes["fc.weight"] = (1000, inplanes)
    return shapes


def gpt2_shapes(layers: int = 12, vocab: int = 50257) -> dict[str, tuple[int, ...]]:
    """Weight matrices of GPT-2 small (HF Conv1D layout: (in, out))."""
    d = 768
    shapes = {"wte.weight": (vocab, d), "wpe.weight": (1024, d)} if vocab else {}
    for i in range(layers):
        p = f"h.{i}."
        shapes[p + "attn.c_attn.weight"] = (d, 3 * d)
        shapes[p + "attn.c_proj.weight"] = (d, d)
        shapes[p + "mlp.c_fc.weight"] = (d, 4 * d)
        shapes[p + "mlp.c_proj.weight"] = (4 * d, d)
    return shapes


def all_shapes(quick: bool) -> dict[str, tuple[int, ...]]:
    if quick:
        resnet, gpt = resnet50_shapes(stages=2), gpt2_shapes(layers=1, vocab=0)
    else:
        resnet, gpt = resnet50_shapes(), gpt2_shapes()
    return {
        **{f"resnet50.{k}": v for k, v in resnet.items()},
        **{f"gpt2.{k}": v for k, v in gpt.items()},
    }


def make_tensor(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian/Laplace mixture with a random mixing weight, std ~ 1/sqrt(fan_in)."""
    n = math.prod(shape)
    std = 1.0 / math.sqrt(math.prod(shape[1:]))
    x = rng.standard_normal(n, dtype=np.float32) * np.float32(std)
    laplace = rng.random(n, dtype=np.float32) < rng.uniform(0.0, 1.0)
    # Laplace with the same variance: b = std / sqrt(2).
    x[laplace] = rng.laplace(0.0, std / math.sqrt(2.0), int(laplace.sum())).astype(np.float32)
    return x.reshape(shape)


def make_state_dict(quick: bool) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(SEED)
    return {k: torch.from_numpy(make_tensor(rng, s)) for k, s in all_shapes(quick).items()}


def channel_overrides(sd: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Tensors whose row length is not a multiple of GROUP go per channel instead."""
    return {
        k: {"granularity": "channel"} for k, v in sd.items() if (v.numel() // v.shape[0]) % GROUP
    }


def nuq_call(sd, label: str) -> Callable[[], object]:
    kwargs = dict(CONFIGS[label])
    if "group_size" in kwargs and kwargs.get("codebook") == "lloyd-max":
        kwargs["overrides"] = channel_overrides(sd)
    return lambda: nuq_rs.quantize_state_dict(sd, BITS, **kwargs)


def reference_call(arrays: list[np.ndarray], label: str) -> Callable[[], None]:
    gran = CONFIGS[label].get("granularity", "group")

    def run() -> None:
        for x in arrays:
            rows = x.reshape(x.shape[0], -1)
            g = "channel" if gran == "group" and rows.shape[1] % GROUP else gran
            reference_numpy.quantize_reference(rows, BITS, g, GROUP if g == "group" else None)

    return run


def paired_seconds(
    base: Callable[[], object], fn: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """Medians of `base` and `fn` timed in turn (base, fn, base, fn, ...) and the
    median of the per-pair speed ratios base/fn: noise that drifts over a run
    (other tenants of the host) hits both sides of a pair alike."""
    pairs = []
    for _ in range(repeats):
        pair = []
        for f in (base, fn):
            gc.collect()
            start = time.perf_counter()
            f()
            pair.append(time.perf_counter() - start)
        pairs.append(pair)
    return (
        statistics.median(b for b, _ in pairs),
        statistics.median(t for _, t in pairs),
        statistics.median(b / t for b, t in pairs),
    )


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def subset(sd: dict[str, torch.Tensor], budget: int) -> list[str]:
    """One tensor per distinct shape, in order, while the total stays within budget."""
    seen, names, total = set(), [], 0
    for k, v in sd.items():
        shape = tuple(v.shape)
        if shape in seen or total + v.numel() > budget:
            continue
        seen.add(shape)
        names.append(k)
        total += v.numel()
    return names


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(label: str, quick: bool) -> None:
    """Subprocess body: build the input, reset the peak, quantize, print JSON."""
    sd = make_state_dict(quick)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    before_rss, before_hwm = _status_kib("VmRSS"), _status_kib("VmHWM")
    q = nuq_call(sd, label)()
    after_hwm = _status_kib("VmHWM")
    out_bytes = sum(t.bytes_after for t in q.report().tensors)
    base = before_rss if reset else before_hwm
    print(json.dumps({"peak_extra": (after_hwm - base) * 1024, "reset": reset, "out": out_bytes}))


def peak_memory(label: str, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--peak-child", label] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt_rate(params: int, seconds: float) -> str:
    return f"{params / seconds / 1e6:9.3g} Mparam/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10M parameters, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
    parser.add_argument("--ref-params", type=float, default=None, help="reference subset size")
    parser.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), help="what to time"
    )
    parser.add_argument("--peak-child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        peak_memory_child(args.peak_child, args.quick)
        return
    repeats = args.repeats or (3 if args.quick else 5)
    ref_budget = int(args.ref_params or (5e5 if args.quick else 4e6))

    # Memory first, in fresh subprocesses, before this process holds the input.
    memory = {label: peak_memory(label, args.quick) for label in args.configs}
    sd = make_state_dict(args.quick)
    arrays = {k: v.numpy() for k, v in sd.items()}
    n_params = sum(v.numel() for v in sd.values())
    largest = max(sd, key=lambda k: sd[k].numel())
    names = subset(sd, ref_budget)
    sub_sd = {k: sd[k] for k in names}
    n_sub = sum(sd[k].numel() for k in names)
    fallback = sorted(channel_overrides(sd))

    print(f"# nuq_rs.quantize_state_dict at {BITS} bits, median of {repeats}")
    print(
        f"state dict: {len(sd)} tensors, {n_params / 1e6:.1f}M params "
        f"({4 * n_params / 2**20:.0f} MiB fp32); threads: {nuq_rs.get_num_threads()}"
    )
    print(
        f"group {GROUP}: {len(fallback)} tensors whose row length is not a multiple of "
        f"{GROUP} use overrides {{'granularity': 'channel'}}: {', '.join(fallback)}"
    )
    print(
        f"(a) reference_numpy on a SUBSET: {len(names)} tensors, {n_sub / 1e6:.2f}M params "
        f"(one per distinct shape); nuq is timed on the same subset for the ratio"
    )
    print(
        "(b) np.sum over all tensors, the memory-read floor: timed in turn with each "
        "config's runs\n"
    )

    header = (
        f"{'config':10s} {'nuq (all)':>18s} {'floor (b)':>18s} {'x floor(b)':>10s} "
        f"{'nuq (subset)':>18s} {'ref (a, subset)':>18s} {'x ref(a)':>9s} "
        f"{'peak extra':>11s} {'/largest':>8s}"
    )
    print(header)
    largest_bytes = 4 * sd[largest].numel()

    def floor_call() -> None:
        for a in arrays.values():
            np.sum(a)

    for label in args.configs:
        t_floor, t_all, x_floor = paired_seconds(floor_call, nuq_call(sd, label), repeats)
        t_sub = median_seconds(nuq_call(sub_sd, label), repeats)
        ref = reference_call([arrays[k] for k in names], label)
        ref()  # the standardized Lloyd-Max solve is cached by design; keep it out of timing
        t_ref = median_seconds(ref, min(repeats, 3))
        mem = memory[label]
        print(
            f"{label:10s} {fmt_rate(n_params, t_all)} {fmt_rate(n_params, t_floor)} "
            f"{x_floor:10.3f} {fmt_rate(n_sub, t_sub)} {fmt_rate(n_sub, t_ref)} "
            f"{t_ref / t_sub:9.1f} {mem['peak_extra'] / 2**20:8.1f} MiB "
            f"{mem['peak_extra'] / largest_bytes:8.2f}",
            flush=True,
        )
    print(
        "\nRatios are speeds, nuq params/s / baseline params/s, measured in this run: "
        "x floor(b) is the median over the timed pairs (np.sum, then nuq) of the pair's "
        "ratio, < 1 meaning slower than one np.sum pass over the input (1/x is how many "
        "times slower); x ref(a) is the speed-up over the NumPy/SciPy reference on the "
        "same subset."
    )
    first = args.configs[0]
    print(
        f"peak extra: VmHWM growth during the call beyond the built input (reset via "
        f"clear_refs: {memory[first]['reset']}), includes the packed output "
        f"(~{memory[first]['out'] / 2**20:.0f} MiB at {first} granularity); "
        f"/largest: relative to the largest tensor {largest} "
        f"({largest_bytes / 2**20:.0f} MiB fp32)."
    )


if __name__ == "__main__":
    main()
