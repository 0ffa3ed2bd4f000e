"""LUT matmul on packed weights vs PyTorch's CPU paths, at LLM and CNN shapes.

For each (K, N), M, bits and granularity, cycles through enough distinct layers
that the weights exceed the L3 cache (as a real forward pass does) and reports,
all measured in this run: the median of --repeats passes over the layers, with
every case timed once per round in an order that rotates between rounds, so
that the machine's slow spells hit all cases alike:

- nuq ``_nuq_rs.linear`` time per layer;
- ``F.linear`` fp32, ``torch.ao`` dynamic int8 Linear and PyTorch's CPU int4
  kernel (``_weight_int4pack_mm_for_cpu``, group 128, bf16 activations) on the
  same shapes, and nuq's speed-up against each;
- the effective weight bandwidth (packed bytes / time) against ``np.sum``'s read
  bandwidth over an fp32 array larger than L3;
- for M > 16, the opt-in int8-activation path (``int8_activations=True``, the
  VNNI kernel where the CPU has it) and its speed-up against fp32 and int8.

The weights cycled per case are at least twice the L3 size that ``lscpu`` reports
(else ``/sys/devices/system/cpu/cpu0/cache/index3/size``; 96 MB if neither says),
or ``--min-mb`` where that is larger. The output names the CPU and the L3 source.

    python benches/bench_matmul.py [--quick] [--repeats 5] [--min-mb MB]

``--overhead`` measures instead what the layers add per call beyond the
kernel, for N x N 4-bit layers (``--sizes``, default 64 256 4096) at M = 1: the
median per-call time of ``F.linear`` fp32, the raw binding call
(``_nuq_rs.linear`` on prebuilt NumPy arrays), an ``nn.Linear`` after
``nuq_rs.quantize_`` (the ``PackedWeight`` path) and ``NuqLinear``, all on the
same packed weight (per-channel), and each module's time minus the raw call.
The four are timed in turn, ``--calls`` calls per sample (fewer for layers
whose calls are slow, shown), ``--samples`` samples each, the order rotating
between samples. The weights stay in cache (one layer each), so this isolates
the per-call cost; it is only meaningful on an otherwise idle machine.

    python benches/bench_matmul.py --overhead [--sizes 64 256 4096] [--calls 2000] [--samples 15]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

import nuq_rs
from nuq_rs._nuq_rs import linear

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (768, 3072)]
GROUP = 128
SYS_L3 = "/sys/devices/system/cpu/cpu0/cache/index3/size"
# Where neither lscpu nor sysfs tells the L3 size: more than any L3 of this
# project's machines.
FALLBACK_MB = 96
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
# "L3:  32 MiB (1 instance)" (util-linux >= 2.37, the total of all instances),
# "L3 cache:  32 MiB (1 instance)" or "L3 cache:  32768K" (older versions).
_LSCPU_L3 = re.compile(r"^\s*L3(?: cache)?\s*:\s*([\d.]+)\s*([KMG]?)i?B?\b", re.I | re.M)


def cpu_model() -> str:
    """The CPU's 'model name' from /proc/cpuinfo (or 'unknown')."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def parse_size(number: str, unit: str) -> int:
    """Bytes of a cache size such as ('32', 'M') or ('32768', 'K')."""
    return int(float(number) * _UNITS[unit.upper()])


def l3_from_lscpu(text: str) -> int | None:
    """The L3 size in bytes from ``lscpu`` output, or None if it has no L3 line."""
    found = _LSCPU_L3.search(text)
    return parse_size(*found.groups()) if found else None


def l3_size() -> tuple[int | None, str]:
    """``(bytes, source)`` of the L3 cache: lscpu, else sysfs, else ``(None, ...)``."""
    try:
        env = {**os.environ, "LC_ALL": "C"}  # English field names
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, env=env).stdout
        size = l3_from_lscpu(out)
        if size:
            return size, "lscpu"
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        with open(SYS_L3) as f:
            found = re.fullmatch(r"([\d.]+)\s*([KMG]?)i?B?", f.read().strip(), re.I)
        if found:
            return parse_size(*found.groups()), SYS_L3
    except OSError:
        pass
    return None, "neither lscpu nor sysfs"


def weights_mb(user_mb: int | None, l3: int | None) -> int:
    """MB of weights to cycle per case: twice the L3 (so every pass misses it),
    or the user's figure where that is larger."""
    need = math.ceil(2 * l3 / 2**20) if l3 else FALLBACK_MB
    return max(need, user_mb or 0)


def one_pass(fn, layers) -> float:
    """Mean time per layer of one pass over `layers`."""
    start = time.perf_counter()
    for layer in layers:
        fn(layer)
    return (time.perf_counter() - start) / len(layers)


def interleaved(cases: dict, repeats: int) -> dict[str, float]:
    """Median time per layer of every case, `cases[name] = (fn, layers)`.

    The cases are timed in rounds, one pass of each per round in an order that
    rotates between rounds, so a slow spell of the (shared, noisy) machine
    hits every case alike instead of whichever ran during it.
    """
    for fn, layers in cases.values():
        fn(layers[0])  # warm-up (page faults, thread pools)
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            # Untimed pause: PyTorch's OpenMP threads spin for a while after
            # each call, and would otherwise eat into the next case's pass.
            time.sleep(0.05)
            times[name].append(one_pass(*cases[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def read_bandwidth(repeats: int, min_mb: int) -> float:
    """np.sum's read bandwidth over 256 MB or ``min_mb`` if larger (more than L3), GB/s."""
    a = np.ones(max(256, min_mb) << 18, np.float32)
    a.sum()
    return a.nbytes / statistics.median(_timed(a.sum) for _ in range(repeats)) / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def nuq_layers(w: torch.Tensor, count: int, bits: int, gran: dict) -> list:
    """`count` packed layers (distinct copies, so nothing stays in cache)."""
    q = nuq_rs.quantize_tensor(w, bits, **gran)
    return [
        (q.packed.copy(), q.levels, q.loc.copy(), q.scale.copy(), q.config.group_size)
        for _ in range(count)
    ]


def int4_layers(w: torch.Tensor, count: int) -> list:
    """PyTorch int4 packing (asymmetric min-max per group of 128, as torchao does)."""
    n, k = w.shape
    g = w.reshape(n, k // GROUP, GROUP)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    codes = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
    zero = lo + 8 * scale  # the kernel decodes (q - 8) * scale + zero
    sz = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.reshape(n, k), 2)
    return [(packed.clone(), sz.clone()) for _ in range(count)]


def bench_shape(k: int, n: int, args, bandwidth: float) -> list[str]:
    torch.manual_seed(0)
    w = torch.randn(n, k) / k**0.5
    fp32_count = max(2, -(-args.min_mb * 2**20 // (4 * n * k)))
    lines = []
    dense = [w.clone() for _ in range(fp32_count)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = [
            torch.ao.quantization.quantize_dynamic(
                torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)), dtype=torch.qint8
            )
            for _ in range(max(2, -(-args.min_mb * 2**20 // (n * k))))
        ]
    int4 = int4_layers(w, max(2, -(-args.min_mb * 2**20 // (n * k // 2))))
    nuq = {}
    for bits in args.bits:
        for name, gran in (("g128", {"group_size": GROUP}), ("chan", {"granularity": "channel"})):
            per_layer = n * -(-k * bits // 8)
            count = max(2, -(-args.min_mb * 2**20 // per_layer))
            nuq[bits, name] = (per_layer, nuq_layers(w, count, bits, gran))
    for m in args.m:
        x = torch.randn(m, k)
        xb = x.to(torch.bfloat16)
        xn = x.numpy()
        cases = {
            "fp32": (lambda d, x=x: F.linear(x, d), dense),
            "int8": (lambda q, x=x: q(x), int8),
            "int4": (
                lambda p, xb=xb: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, p[0], GROUP, p[1]),
                int4,
            ),
        }
        for (bits, name), (_, layers) in nuq.items():
            cases[f"{bits} {name}"] = (
                lambda L, xn=xn, bits=bits: linear(xn, L[0], L[1], L[2], L[3], n, k, bits, L[4]),
                layers,
            )
            if m > 16:
                cases[f"{bits} {name} i8"] = (
                    lambda L, xn=xn, bits=bits: linear(
                        xn, L[0], L[1], L[2], L[3], n, k, bits, L[4], None, True
                    ),
                    layers,
                )
        with torch.inference_mode():
            t = interleaved(cases, args.repeats)
        for (bits, name), (per_layer, layers) in nuq.items():
            tn = t[f"{bits} {name}"]
            gbs = (per_layer + 2 * layers[0][3].size) / tn / 1e9
            ti8 = t.get(f"{bits} {name} i8")
            int8_act = (
                f"{ti8 * 1e3:.3f} | {t['fp32'] / ti8:.2f}x | {t['int8'] / ti8:.2f}x"
                if ti8
                else "- | - | -"
            )
            lines.append(
                f"| {k}x{n} | {m} | {bits} | {name} | {tn * 1e3:.3f} | {t['fp32'] * 1e3:.3f} "
                f"| {t['fp32'] / tn:.2f}x | {t['int8'] / tn:.2f}x | {t['int4'] / tn:.2f}x "
                f"| {gbs:.1f} ({gbs / bandwidth:.0%}) | {int8_act} |"
            )
            print(lines[-1], flush=True)
    return lines


#: Variants of ``--overhead``, in the order of its columns.
OVERHEAD_CASES = ("fp32", "raw", "quantize_", "NuqLinear")
#: Longest a sample of one case may take: slower calls get fewer per sample.
SAMPLE_SECONDS = 0.25


def overhead_layers(n: int) -> dict:
    """The four callables of ``--overhead`` for an n x n 4-bit layer at M = 1,
    all on the same packed weight and bias."""
    from nuq_rs.nn import NuqLinear

    torch.manual_seed(0)
    dense = torch.nn.Linear(n, n)
    packed = torch.nn.Linear(n, n)
    packed.load_state_dict(dense.state_dict())
    nuq_rs.quantize_(packed, bits=4, granularity="channel", bias_correction=False)
    w = packed.weight
    q = nuq_rs.quantize_tensor(dense.weight.detach(), 4, granularity="channel")
    module = NuqLinear(q, dense.bias)
    x = torch.randn(1, n)
    xn, bias = x.numpy(), dense.bias.detach().numpy()
    arrays = w._arrays()
    return {
        "fp32": lambda: F.linear(x, dense.weight, dense.bias),
        "raw": lambda: linear(xn, *arrays, n, n, 4, w.group_size, bias),
        "quantize_": lambda: packed(x),
        "NuqLinear": lambda: module(x),
    }


def per_call(fn, calls: int) -> float:
    """Seconds per call of ``calls`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def overhead_row(n: int, calls: int, samples: int) -> str:
    """One table row of ``--overhead``: median microseconds per call."""
    cases = overhead_layers(n)
    for fn in cases.values():
        fn()  # warm-up (page faults, thread pools)
    slowest = max(per_call(fn, 1) for fn in cases.values())
    calls = max(1, min(calls, int(SAMPLE_SECONDS / slowest)))
    times: dict[str, list[float]] = {name: [] for name in OVERHEAD_CASES}
    for r in range(samples):
        order = OVERHEAD_CASES[r % 4 :] + OVERHEAD_CASES[: r % 4]
        for name in order:
            times[name].append(per_call(cases[name], calls))
    us = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    cells = [f"{us[name]:.2f}" for name in OVERHEAD_CASES]
    extra = [f"{us[name] - us['raw']:.2f}" for name in ("quantize_", "NuqLinear")]
    return f"| {n}x{n} | 1 | {calls} | " + " | ".join(cells + extra) + " |"


def overhead(args) -> None:
    """The ``--overhead`` table (see the module docstring)."""
    print(f"CPU: {cpu_model()}")
    print(
        f"threads: torch {torch.get_num_threads()}, nuq {nuq_rs.get_num_threads()}; "
        f"{args.samples} samples, median per call; 4-bit per-channel layers"
    )
    print(
        "| layer | M | calls/sample | fp32 F.linear us | raw binding us | quantize_ us "
        "| NuqLinear us | quantize_ - raw us | NuqLinear - raw us |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for n in args.sizes:
            print(overhead_row(n, args.calls, args.samples), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape, M = 1 and 64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--min-mb", type=int, help="weights cycled per case (default and floor: twice L3)"
    )
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    parser.add_argument("--m", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--overhead", action="store_true", help="per-call cost of the layers beyond the kernel"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 4096])
    parser.add_argument("--calls", type=int, default=2000, help="--overhead: calls per sample")
    parser.add_argument("--samples", type=int, default=15, help="--overhead: samples per case")
    args = parser.parse_args()
    if args.overhead:
        torch.set_num_threads(nuq_rs.get_num_threads())
        overhead(args)
        return
    shapes = SHAPES[:1] if args.quick else SHAPES
    if args.quick:
        args.m = [1, 64]
    torch.set_num_threads(nuq_rs.get_num_threads())
    l3, source = l3_size()
    args.min_mb = weights_mb(args.min_mb, l3)
    print(f"CPU: {cpu_model()}")
    l3_text = f"{l3 / 2**20:g} MiB (from {source})" if l3 else f"unknown ({source})"
    print(f"L3: {l3_text}; weights cycled per case >= {args.min_mb} MB")
    bandwidth = read_bandwidth(args.repeats, args.min_mb)
    print(
        f"threads: torch {torch.get_num_threads()}, nuq {nuq_rs.get_num_threads()}; "
        f"np.sum read bandwidth {bandwidth:.1f} GB/s"
    )
    print(
        "| KxN | M | bits | gran | nuq ms | fp32 ms | vs fp32 | vs int8 | vs int4 "
        "| weight GB/s (of read bw) | nuq int8-act ms | vs fp32 | vs int8 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, n in shapes:
        bench_shape(k, n, args, bandwidth)


if __name__ == "__main__":
    main()
