"""The opt-in int8-activation path of ``NuqLinear`` against its stated bound.

The int8 kernels run on AVX512-VNNI, or as their scalar reference under
``NUQ_ISA=scalar`` on any CPU. Where neither is selected in this process the
tests that need them skip, and ``test_int8_under_the_scalar_reference`` runs
this file again under ``NUQ_ISA=scalar``, so the int8 path is tested on every
CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nuq_rs  # noqa: E402
import nuq_rs.nn as qnn  # noqa: E402

INT8 = nuq_rs.kernels()["int8"]
needs_int8 = pytest.mark.skipif(
    INT8 is None,
    reason="no int8 kernel in this process (the CPU lacks AVX512-VNNI and NUQ_ISA is not "
    "'scalar'): test_int8_under_the_scalar_reference runs these under NUQ_ISA=scalar",
)
BLOCK = 128  # columns per activation scale without groups (nuq_core INT8_BLOCK)


def int8_bound(q: qnn.NuqLinear, x: torch.Tensor) -> torch.Tensor:
    """The documented bound per output, ``[m, n]``, plus fp32 rounding.

    ``sum_j scale_rj * (sx_ij / 2 * |level_rj| + (|x_ij| + sx_ij / 2) * sl / 2)``
    with ``sx`` = max|x| / 127 per block of the row and ``sl`` = max|levels| / 127.
    """
    n, k = q.out_features, q.in_features
    w = q.dequantize().weight.detach().double()
    loc = q.loc.double().reshape(-1, 1) if q.loc.numel() else torch.zeros(1, 1)
    dev = (w - loc).abs()  # scale * |level| per weight
    g = q.group_size
    if g:
        per_row = -(-k // g)  # a short last group when g does not divide k
        scale = q.scale.double().reshape(n, per_row).repeat_interleave(g, 1)[:, :k]
    else:
        scale = q.scale.double().reshape(-1, 1).expand(n, k)
    sl = q.levels.abs().max().double() / 127
    block = g or BLOCK
    xd = x.double()
    blocks = xd.abs().split(block, dim=1)
    sx = torch.cat([b.amax(1, keepdim=True).expand_as(b) for b in blocks], 1) / 127
    bound = (sx / 2) @ dev.T + ((xd.abs() + sx / 2) @ scale.abs().T) * sl / 2
    return bound * (1 + 1e-6) + 1e-5 * (xd.abs() @ w.abs().T)


@needs_int8
@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 150),
    quads=st.integers(1, 60),
    n=st.integers(1, 70),
    bits=st.integers(1, 8),
    gran=st.sampled_from([{}, {"granularity": "channel"}, {"group_size": 4}, {"group_size": 8}]),
    seed=st.integers(0, 2**31),
)
def test_int8_linear_is_within_its_stated_bound(m, quads, n, bits, gran, seed):
    g = gran.get("group_size")
    k = g * quads if g else 4 * quads + seed % 4  # odd K where groups allow it
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.1)
    q = qnn.NuqLinear.from_float(lin, bits=bits, activations="int8", **gran)
    x = torch.randn(m, k, generator=gen) * 3
    with torch.inference_mode():
        got = q(x).double()
        want = F.linear(x.double(), q.dequantize().weight.double(), lin.bias.double())
    assert ((got - want).abs() <= int8_bound(q, x)).all()


def test_activations_option_is_checked_and_shown():
    lin = nn.Linear(32, 8)
    with pytest.raises(ValueError, match="unknown activations 'int4'; expected 'fp32' or 'int8'"):
        qnn.NuqLinear.from_float(lin, activations="int4")
    net = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Conv2d(1, 2, 3))
    qnet, _ = qnn.quantize_model(net, bits=4, activations="int8")
    assert qnet[0].activations == "int8"
    assert "activations=int8" in repr(qnet[0])
    with pytest.raises(ValueError, match="activations"):
        qnn.quantize_model(net, activations="bf16")
    qnet[0].activations = "fp8"
    with pytest.raises(ValueError, match="activations"), torch.no_grad():
        qnet[0](torch.ones(1, 32))


@needs_int8
def test_the_int8_kernel_runs_above_16_rows():
    """Up to 16 rows run the exact fp32 kernels, more rows the int8 one: its
    rounding shows (a quiet fallback to fp32 would fail here)."""
    lin = nn.Linear(256, 24)
    exact = qnn.NuqLinear.from_float(lin, bits=4)
    fast = qnn.NuqLinear.from_float(lin, bits=4, activations="int8")
    x = torch.randn(40, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(fast(x[:16]), exact(x[:16]))
        diff = (fast(x[:17]) - exact(x[:17])).abs()
    assert diff.max() > 1e-4
    assert (diff <= int8_bound(fast, x[:17]).float()).all()


@needs_int8
def test_fashion_cnn_keeps_its_predictions_with_int8_activations(fashion_cnn):
    model, images, labels = fashion_cnn
    exact, _ = qnn.quantize_model(model, bits=4)
    fast, _ = qnn.quantize_model(model, bits=4, activations="int8")
    with torch.inference_mode():
        want = exact(images)
        got = fast(images)
    assert not torch.equal(got, want)  # the int8 kernel ran
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.99
    assert (got.argmax(1) == labels).float().mean() > 0.85


def test_int8_under_the_scalar_reference():
    """This file again under ``NUQ_ISA=scalar`` (the int8 reference kernel), in
    a subprocess; nothing may skip there."""
    if INT8 == "scalar":
        pytest.skip("this process already runs the scalar int8 reference")
    env = {k: v for k, v in os.environ.items() if k != "NUQ_FORCE_SCALAR"}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", __file__]
        + ["-k", "not under_the_scalar_reference"],
        env=env | {"NUQ_ISA": "scalar"},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "passed" in p.stdout.strip().splitlines()[-1], p.stdout
    assert "no int8 kernel" not in p.stdout, p.stdout
