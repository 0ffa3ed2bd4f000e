"""Determinism across instruction sets: ``NUQ_ISA`` forces scalar, AVX2 or
AVX-512 for packing, encoding, the statistics and the LUT kernels. The same
work (tests/_isa_cases.py) runs in a subprocess under every instruction set
this CPU has, and once more with ``NUQ_PREFILL=gemm`` (the ``gemm`` crate's
prefill product): codes, codebooks and scales are bit-identical, and matmul
outputs agree within the stated bound. Paths the CPU lacks are skipped, with
the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nuq_rs

torch = pytest.importorskip("torch")

import _isa_cases  # noqa: E402
from test_int8 import int8_bound  # noqa: E402

HERE = Path(__file__).parent
ISAS = ("scalar", "avx2", "avx512")
AVAILABLE = nuq_rs.kernels()["available"]
CPUINFO = Path("/proc/cpuinfo")
HAS_VNNI = CPUINFO.exists() and " avx512_vnni" in CPUINFO.read_text()


def clean_env(**extra: str) -> dict[str, str]:
    forced = ("NUQ_ISA", "NUQ_FORCE_SCALAR", "NUQ_PREFILL")
    env = {k: v for k, v in os.environ.items() if k not in forced}
    return env | extra


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=clean_env(**env), capture_output=True, text=True
    )


def kernels_under(**env: str) -> dict:
    p = python("import json, nuq_rs; print(json.dumps(nuq_rs.kernels()))", **env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """The cases' results under every available instruction set, and under
    the fastest with ``NUQ_PREFILL=gemm`` (key ``"gemm"``), in parallel: each
    subprocess is mostly single-threaded work."""
    out = tmp_path_factory.mktemp("isa")
    envs = {isa: {"NUQ_ISA": isa} for isa in AVAILABLE} | {"gemm": {"NUQ_PREFILL": "gemm"}}
    procs = {
        key: subprocess.Popen(
            [sys.executable, str(HERE / "_isa_cases.py"), str(out / f"{key}.npz")],
            env=clean_env(RAYON_NUM_THREADS="1", **env),
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, env in envs.items()
    }
    res = {}
    for isa, p in procs.items():
        _, err = p.communicate()
        assert p.returncode == 0, f"{isa}: {err}"
        with np.load(out / f"{isa}.npz") as z:
            res[isa] = {k: z[k] for k in z.files}
    return res


@pytest.mark.parametrize("isa", ISAS)
def test_each_path_runs_what_it_names(results, isa):
    if isa not in AVAILABLE:
        pytest.skip(f"this CPU lacks {isa} (has {', '.join(AVAILABLE)})")
    k = json.loads(str(results[isa]["kernels"]))
    # The default products: the micro-kernel for matmuls, the gemm crate for
    # convolutions, except under the scalar reference.
    conv = "micro" if isa == "scalar" else "gemm"
    assert (k["isa"], k["requested"]) == (isa, isa)
    assert k["prefill"] == {"linear": "micro", "conv2d": conv}
    # The int8 path: its scalar reference under NUQ_ISA=scalar, VNNI under
    # AVX-512 where the CPU has it, the fp32 kernels otherwise.
    vnni = "vnni" if HAS_VNNI else None
    assert k["int8"] == {"scalar": "scalar", "avx2": None, "avx512": vnni}[isa]


@pytest.mark.parametrize("isa", ISAS[1:])
def test_codes_are_bit_identical_on_every_path(results, isa):
    if isa not in AVAILABLE:
        pytest.skip(f"this CPU lacks {isa} (has {', '.join(AVAILABLE)})")
    ref, got = results["scalar"], results[isa]
    quantized = [k for k in ref if not k.startswith(("out/", "kernels"))]
    assert len(quantized) > 200
    for key in quantized:
        a, b = ref[key], got[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert a.tobytes() == b.tobytes(), f"{key} differs between scalar and {isa}"


def test_the_gemm_prefill_runs_what_it_names(results):
    k = json.loads(str(results["gemm"]["kernels"]))
    assert (k["isa"], k["requested"]) == (AVAILABLE[-1], None)
    assert k["prefill"] == {"linear": "gemm", "conv2d": "gemm"}


@pytest.mark.parametrize("isa", (*ISAS[1:], "gemm"))
def test_matmul_outputs_agree_within_the_stated_bound(results, isa):
    """Each path is within 1e-5 of ``sum |x| |w|`` of the product with the
    decoded weights (README), so two paths are within twice that; int8
    outputs are bit-identical where both paths ran an int8 kernel (scalar
    and VNNI do the same integer sums), and within the int8 bound of the
    exact product otherwise (tests/test_int8.py checks that bound). ``gemm``
    is the fastest instruction set with the ``gemm`` crate's prefill."""
    if isa not in (*AVAILABLE, "gemm"):
        pytest.skip(f"this CPU lacks {isa} (has {', '.join(AVAILABLE)})")
    ref, got = results["scalar"], results[isa]
    int8_both = json.loads(str(got["kernels"]))["int8"] is not None
    for name, (layer, x) in _isa_cases.layers().items():
        a, b = ref[f"out/{name}"], got[f"out/{name}"]
        assert a.shape == b.shape
        w = layer.dequantize().weight.detach().double()
        if w.ndim == 4:
            mag = torch.nn.functional.conv2d(x.double().abs(), w.abs(), padding=1)
        else:
            mag = x.double().abs() @ w.abs().T
        bound = 2e-5 * mag
        if "/int8/" in name and x.shape[0] > 16:
            if int8_both:
                assert a.tobytes() == b.tobytes(), name
                continue
            bound = int8_bound(layer, x) + 1e-5 * mag
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
        assert (err <= bound.numpy()).all(), f"{name}: {err.max()}"


def test_every_path_differs_from_a_wrong_answer(results):
    """The comparisons above see real data: the outputs are not all zero and
    the int8 outputs (where an int8 kernel ran) are not the fp32 ones."""
    ref = results["scalar"]
    assert np.abs(ref["out/linear/4/fp32/70"]).max() > 0.1
    assert ref["out/linear/4/int8/70"].tobytes() != ref["out/linear/4/fp32/70"].tobytes()


def test_scalar_alias_and_missing_paths():
    assert kernels_under(NUQ_FORCE_SCALAR="1")["isa"] == "scalar"
    assert kernels_under(NUQ_FORCE_SCALAR="1", NUQ_ISA="auto")["isa"] == AVAILABLE[-1]
    assert kernels_under()["requested"] is None
    missing = [i for i in ISAS if i not in AVAILABLE]
    if not missing:
        pytest.skip("this CPU has every instruction set: no fallback to see")
    p = python("import nuq_rs; print(nuq_rs.kernels()['isa'])", NUQ_ISA=missing[0])
    assert p.returncode == 0, p.stderr
    below = [i for i in AVAILABLE if ISAS.index(i) < ISAS.index(missing[0])][-1]
    assert p.stdout.strip() == below
    assert f"NUQ_ISA={missing[0]} but this CPU lacks it: using {below}" in p.stderr


def test_an_unknown_isa_refuses_the_import():
    p = python("import nuq_rs", NUQ_ISA="avx-512")
    assert p.returncode != 0
    assert 'ValueError: NUQ_ISA="avx-512" is not one of auto, scalar, avx2, avx512' in p.stderr


def test_an_unknown_prefill_refuses_the_import():
    p = python("import nuq_rs", NUQ_PREFILL="blas")
    assert p.returncode != 0
    assert 'ValueError: NUQ_PREFILL="blas" is not one of auto, micro, gemm' in p.stderr
    assert kernels_under(NUQ_PREFILL="auto")["prefill"]["linear"] == "micro"
    assert kernels_under(NUQ_PREFILL="micro")["prefill"] == {"linear": "micro", "conv2d": "micro"}
