"""How quantizing one tensor grows with its size: time and peak memory from 1e3
to 1e8 elements, and the exponent of each fitted on a log-log scale.

For every size ``n`` (square-ish fp32 matrices of heavy-tailed weights), a fresh
subprocess builds the tensor, resets the peak RSS (``/proc/self/clear_refs``),
runs ``nuq_rs.quantize_tensor`` once to warm up and then ``--repeats`` times, and
reports the median time and the peak RSS growth beyond the built input. The
exponent ``k`` of ``cost ~ n^k`` is the least-squares slope of ``log cost``
against ``log n`` over the sizes from 1e5 up (below that, fixed costs of a call
dominate). A linear algorithm gives ``k`` near 1; a quadratic path would show
as ``k`` near 2 over these four decades. The run fails (exit 1) if an exponent
exceeds ``--max-exponent``.

Timings only mean something on an idle machine: the 1-minute load average is
printed with the CPU (``lscpu``'s model name), and the run refuses to start
above --max-load unless --force.

    python benches/bench_scaling.py [--configs default paper] [--repeats 3] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SIZES = [10**3, 10**4, 10**5, 10**6, 10**7, 10**8]
FIT_FROM = 10**5
CONFIGS = {
    "default": {},
    "paper": {"granularity": "tensor", "codebook": "lloyd-max"},
}

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import nuq_rs

n, repeats, options = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])

def status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

rows = max(1, int(round(n ** 0.5)))
cols = n // rows
rng = np.random.default_rng(0)
x = (rng.standard_t(5, size=(rows, cols)) * 0.02).astype(np.float32)
nuq_rs.quantize_tensor(x, bits=4, **options)
Path("/proc/self/clear_refs").write_text("5")
before = status_kib("VmRSS")
times = []
for _ in range(repeats):
    t = time.perf_counter()
    q = nuq_rs.quantize_tensor(x, bits=4, **options)
    times.append(time.perf_counter() - t)
    del q
peak = status_kib("VmHWM") - before
print(json.dumps({"n": rows * cols, "seconds": sorted(times)[len(times) // 2],
                  "peak_kib": max(peak, 0)}))
"""


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def measure(n: int, repeats: int, options: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(repeats), json.dumps(options)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def exponent(ns: list[int], costs: list[float]) -> float:
    """Least-squares slope of log cost against log n."""
    return float(np.polyfit(np.log(ns), np.log(costs), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["default"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-size", type=float, default=1e8, help="largest size (elements)")
    ap.add_argument("--max-exponent", type=float, default=1.2)
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--force", action="store_true", help="run even on a busy machine")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; 1-min load {load:.2f}")
    if load > args.max_load and not args.force:
        sys.exit(f"load average {load:.2f} > {args.max_load}: timings would mislead (--force)")

    failed = False
    for label in args.configs:
        rows = [measure(n, args.repeats, CONFIGS[label]) for n in SIZES if n <= args.max_size]
        print(f"\n{label} ({CONFIGS[label] or 'defaults'}), 4 bits")
        print(f"{'elements':>12} {'time':>10} {'ns/elem':>8} {'peak extra':>11} {'B/elem':>7}")
        for r in rows:
            print(
                f"{r['n']:>12.3g} {r['seconds'] * 1e3:>8.2f}ms {r['seconds'] / r['n'] * 1e9:>8.2f} "
                f"{r['peak_kib'] / 1024:>9.1f}Mi {r['peak_kib'] * 1024 / r['n']:>7.2f}"
            )
        fit = [r for r in rows if r["n"] >= FIT_FROM]
        if len(fit) < 2:
            continue
        ns = [r["n"] for r in fit]
        k_time = exponent(ns, [r["seconds"] for r in fit])
        # Peak growth under a page or two is noise: floor it at 1 MiB.
        k_mem = exponent(ns, [max(r["peak_kib"], 1024) for r in fit])
        print(f"exponents from {FIT_FROM:.0e} up: time n^{k_time:.2f}, peak memory n^{k_mem:.2f}")
        failed |= max(k_time, k_mem) > args.max_exponent
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
