"""Quantizing a checkpoint from disk, and loading the result, against plain reads.

A GPT-2-small-shaped fp32 safetensors checkpoint (~500 MB: wte, wpe, and the
12 blocks' attention and MLP matrices, biases and norms) is written to a
temporary folder. Reported, all in this run (medians of --repeats, warm page
cache):

- ``nuq-rs quantize IN -o OUT --quiet`` (4 bits, the defaults) against its
  parts: in-memory ``quantize_state_dict`` of the same tensors plus one plain
  read of the file (``cat IN > /dev/null``); target: at most 1.25x. The command
  runs in a fresh process, whose first quantization pays for memory the process
  has never used (pages faulted in and zeroed), so the in-memory call is timed
  in a fresh process as well (the target's ratio), and in this warm one. Python's
  start-up (``import nuq_rs.__main__`` in a fresh process) is timed apart and
  taken out of the command's time; the last run's OUT is deleted (untimed)
  before each run. The four alternate, repeat after repeat;
- ``nuq_rs.load(OUT).dequantize()`` against ``safetensors.torch.load_file(IN)``
  (the original checkpoint); target: within 2x. ``load_file`` only maps the file
  (its tensors are backed by the page cache), so the same load followed by a
  ``clone()`` of every tensor (bytes actually materialized, as decoding must)
  is printed as a second baseline;
- the cost of the checksums: ``nuq_rs.load(OUT).dequantize()`` (every tensor's
  CRC32C checked) against ``nuq_rs.load(OUT, verify=False).dequantize()``, and
  ``nuq_rs.load(OUT).verify()`` alone, as ratios to the unverified load +
  dequantize (target: at most 10 %). The two loads alternate, repeat after repeat.

Timings only mean something on an idle machine: the 1-minute load average is
printed, and the run refuses to start above --max-load unless --force.

The CPU (``lscpu``'s model name) is printed first: every figure is for it.

    python benches/bench_files.py [--repeats 3] [--blocks 12] [--force] [--checksums-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import nuq_rs

SEED = 1234


def gpt2_state_dict(blocks: int) -> dict[str, torch.Tensor]:
    """GPT-2 small shapes (d=768), seeded Gaussian weights, fp32."""
    g = torch.Generator().manual_seed(SEED)
    d = 768
    sd = {"wte.weight": 0.02 * torch.randn(50257, d, generator=g)}
    sd["wpe.weight"] = 0.01 * torch.randn(1024, d, generator=g)
    for b in range(blocks):
        p = f"h.{b}."
        for name, shape in (
            ("attn.c_attn", (d, 3 * d)),
            ("attn.c_proj", (d, d)),
            ("mlp.c_fc", (d, 4 * d)),
            ("mlp.c_proj", (4 * d, d)),
        ):
            sd[p + name + ".weight"] = torch.randn(*shape, generator=g) / shape[0] ** 0.5
            sd[p + name + ".bias"] = torch.zeros(shape[1])
        for norm in ("ln_1", "ln_2"):
            sd[p + norm + ".weight"] = torch.ones(d)
            sd[p + norm + ".bias"] = torch.zeros(d)
    return sd


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: page cache, imports, thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else "unknown CPU"


def alternating_medians(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    before: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    """Median seconds of each function, run in turn repeat after repeat (so that a
    change of machine load hits them alike); ``before[key]``, if given, runs
    untimed before each call of ``fns[key]``."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    before = before or {}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in fns.items():
            before.get(key, lambda: None)()
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_checksums(out: Path, repeats: int) -> None:
    t = alternating_medians(
        {
            "plain": lambda: nuq_rs.load(out, verify=False).dequantize(),
            "verified": lambda: nuq_rs.load(out).dequantize(),
            "verify": lambda: nuq_rs.load(out).verify(),
        },
        repeats,
    )
    mb = out.stat().st_size / 1e6
    print(f"checksums (CRC32C of {mb:,.0f} MB of tensors), medians of {repeats}:")
    print(f"nuq_rs.load(OUT, verify=False).dequantize()  {t['plain']:8.3f} s  (baseline)")
    print(
        f"nuq_rs.load(OUT).dequantize()                {t['verified']:8.3f} s  "
        f"{t['verified'] / t['plain']:6.3f}x the baseline"
    )
    print(
        f"nuq_rs.load(OUT).verify() alone              {t['verify']:8.3f} s  "
        f"{t['verify'] / t['plain']:6.1%} of the baseline ({mb / t['verify']:,.0f} MB/s)"
    )


def run_cli(src: Path, out: Path) -> None:
    """``nuq-rs quantize SRC -o OUT --quiet`` in a fresh process (start-up included)."""
    env = dict(os.environ, PYTHONPATH=str(Path(nuq_rs.__file__).parent.parent))
    cmd = [sys.executable, "-m", "nuq_rs", "quantize", str(src), "-o", str(out), "--quiet"]
    cmd.append("--force")
    subprocess.run(cmd, check=True, env=env)


#: In a fresh process: the checkpoint read into memory, then one timed
#: ``quantize_state_dict`` (printed), the first call of the process, as the
#: command line's is.
FRESH_MEMORY = """
import sys, time
from safetensors.torch import load_file
import nuq_rs
sd = {k: v.clone() for k, v in load_file(sys.argv[1]).items()}
start = time.perf_counter()
nuq_rs.quantize_state_dict(sd, bits=4)
print(time.perf_counter() - start)
"""


def fresh_memory(src: Path, seconds: list[float]) -> None:
    """``quantize_state_dict`` of the checkpoint's tensors in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(Path(nuq_rs.__file__).parent.parent))
    run = subprocess.run(
        [sys.executable, "-c", FRESH_MEMORY, str(src)], capture_output=True, text=True, env=env
    )
    run.check_returncode()
    seconds.append(float(run.stdout))


def python_startup() -> None:
    subprocess.run([sys.executable, "-c", "import nuq_rs.__main__"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument(
        "--checksums-only",
        action="store_true",
        help="only the checksum cost (OUT written in-process, no command line runs)",
    )
    args = parser.parse_args()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs)")
    load = os.getloadavg()[0]
    print(f"load average (1 min): {load:.2f}; threads: {nuq_rs.get_num_threads()}")
    if load > args.max_load and not args.force:
        sys.exit(f"machine busy (load {load:.2f} > {args.max_load}); rerun idle or with --force")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "gpt2.safetensors", Path(tmp) / "gpt2.nuq.safetensors"
        if args.checksums_only:
            nuq_rs.quantize_state_dict(gpt2_state_dict(args.blocks), bits=4).save(out)
            bench_checksums(out, max(args.repeats, 5))
            return
        sd = gpt2_state_dict(args.blocks)
        save_file(sd, str(src))
        mb = src.stat().st_size / 1e6
        fresh: list[float] = []
        t = alternating_medians(
            {
                "cat": lambda: subprocess.run(f"cat '{src}' > /dev/null", shell=True, check=True),
                "startup": python_startup,
                "memory": lambda: nuq_rs.quantize_state_dict(sd, bits=4),
                "fresh": lambda: fresh_memory(src, fresh),
                "cli": lambda: run_cli(src, out),
            },
            args.repeats,
            # a new output each time, as a user writes one: replacing the last
            # run's file would add the time to free it
            before={"cli": lambda: out.unlink(missing_ok=True)},
        )
        cli = t["cli"] - t["startup"]
        warm, cold = t["memory"] + t["cat"], statistics.median(fresh) + t["cat"]
        print(f"checkpoint: {mb:,.0f} MB of fp32 ({args.blocks} GPT-2 blocks), 4 bits, defaults")
        print(f"cat IN > /dev/null                  {t['cat']:8.3f} s  {mb / t['cat']:7,.0f} MB/s")
        print(f"quantize_state_dict, warm process   {t['memory']:8.3f} s")
        print(
            f"quantize_state_dict, fresh process  {statistics.median(fresh):8.3f} s  (first call)"
        )
        print(f"python start-up (import)            {t['startup']:8.3f} s")
        print(
            f"nuq-rs quantize IN -o OUT           {t['cli']:8.3f} s  {cli:.3f} s without start-up"
        )
        print(
            f"file path / (memory + one read): {cli / cold:.3f}x against a fresh process "
            f"({cli:.3f} / {cold:.3f}; target: at most 1.25x), {cli / warm:.3f}x against a "
            f"warm one ({warm:.3f})"
        )
        out_mb = out.stat().st_size / 1e6
        baseline = median_seconds(lambda: load_file(str(src)), args.repeats)
        copied = median_seconds(
            lambda: {k: v.clone() for k, v in load_file(str(src)).items()}, args.repeats
        )
        ours = median_seconds(lambda: nuq_rs.load(out).dequantize(), args.repeats)
        check = nuq_rs.load(out).dequantize()["wte.weight"]
        assert check.dtype == torch.float32 and np.isfinite(check.numpy()).all()
        print(f"quantized file: {out_mb:,.0f} MB")
        print(f"safetensors.torch.load_file(IN)     {baseline:8.3f} s")
        print(f"  + clone() of every tensor          {copied:8.3f} s")
        print(
            f"nuq_rs.load(OUT).dequantize()       {ours:8.3f} s  "
            f"{ours / baseline:6.2f}x load_file, {ours / copied:.2f}x load_file + clone"
        )
        bench_checksums(out, max(args.repeats, 5))


if __name__ == "__main__":
    main()
