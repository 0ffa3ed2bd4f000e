"""The benchmarks run and read the machine right: ``benches/bench_models.py --quick``
on the Fashion CNN end to end (in a subprocess, as a user runs it), and
``bench_matmul``'s reading of the L3 size from ``lscpu`` output."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from nuq_rs import _default_model  # noqa: E402

BENCHES = Path(__file__).resolve().parents[1] / "benches"
MiB = 2**20


def _bench_matmul():
    spec = importlib.util.spec_from_file_location("bench_matmul", BENCHES / "bench_matmul.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# util-linux 2.38 (this project's machines), flat "L<n> cache:" lines.
LSCPU_238 = """\
Architecture:                            x86_64
Model name:                              AMD EPYC
L1d cache:                               64 KiB (2 instances)
L1i cache:                               64 KiB (2 instances)
L2 cache:                                1 MiB (2 instances)
L3 cache:                                32 MiB (1 instance)
Vulnerability L1tf:                      Not affected
"""
# util-linux >= 2.39: a "Caches" section, sizes summed over instances.
LSCPU_239 = """\
Model name:                           Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
Caches (sum of all):
  L1d:                                96 KiB (2 instances)
  L1i:                                64 KiB (2 instances)
  L2:                                 4 MiB (2 instances)
  L3:                                 105 MiB (1 instance)
Vulnerabilities:
  L1tf:                               Not affected
"""
# Older util-linux: bare numbers with a K suffix.
LSCPU_OLD = """\
Model name:            Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
L1d cache:             32K
L1i cache:             32K
L2 cache:              256K
L3 cache:              35840K
NUMA node0 CPU(s):     0-27
"""


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (LSCPU_238, 32 * MiB),
        (LSCPU_239, 105 * MiB),
        (LSCPU_OLD, 35840 * 1024),
        ("  L2:   2 MiB (2 instances)\n  L3:   512 KiB (1 instance)\n", 512 * 1024),
        ("  L3:   64 MiB (2 instances)\n", 64 * MiB),
        ("  L3:   1.5 GiB (4 instances)\n", 3 * 2**29),
    ],
)
def test_l3_is_read_from_lscpu_output(text, want):
    assert _bench_matmul().l3_from_lscpu(text) == want


def test_no_l3_line_gives_none():
    bm = _bench_matmul()
    assert (
        bm.l3_from_lscpu("L1d cache: 32K\nL2 cache: 256K\nVulnerability L1tf: Not affected\n")
        is None
    )


def test_weights_cover_twice_l3_unless_the_user_asks_for_more():
    bm = _bench_matmul()
    assert bm.weights_mb(None, 32 * MiB) == 64
    assert bm.weights_mb(16, 32 * MiB) == 64
    assert bm.weights_mb(200, 32 * MiB) == 200
    assert bm.weights_mb(None, None) == bm.FALLBACK_MB


def _need_fashion_mnist() -> None:
    if not (_default_model.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def test_bench_models_quick_on_the_fashion_cnn(tmp_path):
    _need_fashion_mnist()
    out = tmp_path / "models.json"
    cmd = [sys.executable, str(BENCHES / "bench_models.py"), "--quick", "--models", "fashion"]
    run = subprocess.run(
        [*cmd, "--json", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout
    assert re.search(r"^CPU: .+; CPUs: \d+", text, re.M), text
    assert re.search(r"^threads: torch \d+, nuq \d+; OMP_WAIT_POLICY=.+", text, re.M), text
    variants = ("quantize_ bits=4", "quantize_ target_bpw=4.5", "quantize_model")
    for variant in variants:
        for batch in (1, 64):
            line = rf"^\| fashion-cnn \| {batch} \| {re.escape(variant)} \| .* \| (\d+\.\d+)x \|$"
            assert re.search(line, text, re.M), (variant, batch, text)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * len(variants)
    for row in rows:
        assert row["error"] < 1e-3 and row["ratio"] > 0 and row["q_ms"] > 0
        # 4 bits and codebooks against 32 bits: well under a fifth of the fp32 bytes.
        assert row["q_bytes"] < row["fp32_bytes"] / 5


def test_bench_models_check_catches_a_kernel_that_strays(monkeypatch):
    """The check before timing compares the kernels with the decoded weights: a
    linear kernel 1 % off must fail it, the real one must pass."""
    _need_fashion_mnist()
    from nuq_rs import PackedWeight

    spec = importlib.util.spec_from_file_location("bench_models", BENCHES / "bench_models.py")
    bm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bm)
    ((_, model, inputs_of),) = bm.fashion()
    q = bm.VARIANTS["quantize_ bits=4"](model)
    x = inputs_of(8)
    assert bm.max_rel_error(q, x) < bm.TOLERANCE
    linear = PackedWeight.linear
    monkeypatch.setattr(PackedWeight, "linear", lambda w, x2, b=None: 1.01 * linear(w, x2, b))
    assert bm.max_rel_error(q, x) > bm.TOLERANCE


def test_bench_matmul_overhead_mode_prints_a_parsable_table():
    """``--overhead`` on tiny layers with few calls: the CPU is named, and every
    row has the four timings and the two differences (no timing is judged)."""
    cmd = [sys.executable, str(BENCHES / "bench_matmul.py"), "--overhead"]
    args = ["--sizes", "8", "24", "--calls", "3", "--samples", "2"]
    run = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    text = run.stdout
    assert re.search(r"^CPU: .+", text, re.M), text
    assert re.search(r"^threads: torch \d+, nuq \d+; 2 samples", text, re.M), text
    header = "| layer | M | calls/sample | fp32 F.linear us | raw binding us | quantize_ us "
    assert header in text, text
    number = r"(-?\d+\.\d\d)"
    for n in (8, 24):
        row = rf"^\| {n}x{n} \| 1 \| (\d+) \| " + r" \| ".join([number] * 6) + r" \|$"
        found = re.search(row, text, re.M)
        assert found, (n, text)
        calls, *us = found.groups()
        assert 1 <= int(calls) <= 3
        fp32, raw, packed, module, packed_extra, module_extra = map(float, us)
        assert min(fp32, raw, packed, module) > 0
        assert packed_extra == pytest.approx(packed - raw, abs=0.011)
        assert module_extra == pytest.approx(module - raw, abs=0.011)
