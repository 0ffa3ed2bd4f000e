"""PackedWeight and nuq_rs.quantize_: ops on packed weights against the same ops on
the decoded weights, and the tensor's life inside a model (state dicts, copies, moves)."""

from __future__ import annotations

import copy
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from _packed_check import LUT_BOUND, Calls, decoded_twin, no_full_decode  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nuq_rs  # noqa: E402
import nuq_rs.nn as qnn  # noqa: E402
from nuq_rs import PackedWeight  # noqa: E402


def packed(t: torch.Tensor, bits: int = 4, **options) -> PackedWeight:
    return PackedWeight.from_quantized(nuq_rs.quantize_tensor(t.detach(), bits, **options))


@pytest.mark.parametrize("options", [{}, {"granularity": "channel"}, {"group_size": 8}])
def test_lut_ops_match_the_decoded_weight_and_decode_nothing(options):
    torch.manual_seed(0)
    w = packed(torch.randn(24, 40) * 0.1, 3, **options)
    wd = w.dequantize()
    assert w.shape == (24, 40) and w.dtype == torch.float32
    x, bias = torch.randn(5, 40), torch.randn(24)
    conv = packed(torch.randn(8, 4, 3, 3), 4, **options)
    conv1 = packed(torch.randn(8, 2, 5), 4, **options)
    img, seq = torch.randn(2, 4, 9, 7), torch.randn(2, 4, 30)
    idx = torch.tensor([[3, 0, 23], [3, 3, 1]])
    decoded = (wd, conv.dequantize(), conv1.dequantize())
    with Calls() as calls, torch.no_grad():
        got = [
            F.linear(x, w, bias),
            F.linear(x.reshape(5, 1, 40).expand(5, 3, 40), w),
            x @ w.t(),
            torch.addmm(bias, x, w.T),
            torch.matmul(w, x.t()),
            F.conv2d(img, conv, None, 2, 1),
            F.conv1d(seq, conv1, None, 1, 4, 2, 2),
        ]
    with no_full_decode(), torch.inference_mode():
        F.linear(x, w, bias), F.conv2d(img, conv), F.conv1d(seq, conv1, groups=2)
        rows = F.embedding(idx, w)
        q, k, v = w.split(8)  # row views (MultiheadAttention's packed projection)
        sliced = F.linear(x, w[8:16])
        row, last = w[5], w[-1]  # one row: a packed 1-D view, also in inference mode
    wd, cd, c1d = decoded
    want = [
        F.linear(x, wd, bias),
        F.linear(x.reshape(5, 1, 40).expand(5, 3, 40), wd),
        x @ wd.t(),
        torch.addmm(bias, x, wd.T),
        wd @ x.t(),
        F.conv2d(img, cd, None, 2, 1),
        F.conv1d(seq, c1d, None, 1, 4, 2, 2),
    ]
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert calls.count == 7 and calls.worst < LUT_BOUND
    assert torch.equal(rows, F.embedding(idx, wd))
    assert torch.equal(k.dequantize(), wd[8:16]) and k.shape == (8, 40)
    torch.testing.assert_close(sliced, F.linear(x, wd[8:16]))
    assert isinstance(row, PackedWeight) and row.shape == (40,)
    assert torch.equal(row.dequantize(), wd[5]) and torch.equal(last.dequantize(), wd[-1])


def test_every_other_op_decodes_and_writes_are_refused():
    torch.manual_seed(1)
    w = packed(torch.randn(6, 10))
    wd = w.dequantize()
    assert torch.equal(w * 2, wd * 2)
    assert torch.equal(w[2], wd[2]) and torch.equal(w.sum(0), wd.sum(0))
    assert torch.equal(w.t()[3:5], wd.t()[3:5])
    assert torch.equal(torch.cat([w, w]), torch.cat([wd, wd]))
    assert type(w * 2) is torch.Tensor
    with pytest.raises(TypeError, match="read-only"):
        w.add_(1)
    with pytest.raises(TypeError, match="plain tensor into a nuq_rs packed weight"):
        w.copy_(wd)
    assert "PackedWeight(shape=[6, 10]" in repr(w)


def test_inputs_that_require_grad_are_refused():
    lin = nn.Linear(8, 4)
    nuq_rs.quantize_(lin, bias_correction=False)
    x = torch.randn(2, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        lin(x)
    with torch.no_grad():
        assert lin(x).shape == (2, 4)
    assert lin(x.detach()).shape == (2, 4)  # weights without grad need no no_grad()


def _net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 64)
    )


def test_state_dict_round_trips_through_torch_save_and_load_state_dict():
    net = _net()
    nuq_rs.quantize_(net, bits=3)
    sd = net.state_dict()
    assert isinstance(sd["0.weight"], PackedWeight) and sd["0.weight"].bits == 3
    buf, floats = io.BytesIO(), io.BytesIO()
    torch.save(sd, buf)
    torch.save(_net().state_dict(), floats)
    assert buf.tell() < 0.3 * floats.tell()
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    other = _net()
    nuq_rs.quantize_(other, bits=8, granularity="channel")  # other widths and layout
    other.load_state_dict(back)
    assert other[0].weight.bits == 3 and other[3].weight.group_size == 64
    x = torch.randn(2, 3, 6, 6)
    with torch.inference_mode():
        assert torch.equal(other(x), net(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        nn.Linear(4, 64).load_state_dict({"weight": back["3.weight"], "bias": back["3.bias"]})


def test_deepcopy_to_cpu_and_refused_moves():
    net = _net()
    nuq_rs.quantize_(net)
    weight = net[3].weight
    twin = copy.deepcopy(net)
    assert isinstance(twin[3].weight, PackedWeight) and twin[3].weight is not weight
    assert not twin[3].weight.packed.data_ptr() == weight.packed.data_ptr()
    assert net.to("cpu") is net and net[3].weight is weight
    x = torch.randn(2, 3, 6, 6)
    with torch.inference_mode():
        assert torch.equal(twin(x), net(x))
    for move, what in (
        (lambda m: m.half(), "dtype torch.float16"),
        (lambda m: m.to(torch.bfloat16), "dtype torch.bfloat16"),
        (lambda m: m.cuda(), "device cuda"),
        (lambda m: m.to("cuda"), "device cuda"),
    ):
        match = f"stays torch.float32 on the CPU; cannot move it to {what}"
        with pytest.raises(TypeError, match=match):
            move(copy.deepcopy(net))


def test_quantize_matches_quantize_model_with_bias_correction_and_a_budget():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 2.0), bn.bias.uniform_(-1, 1)
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    for options in ({"bits": 2}, {"target_bpw": 6.5, "overrides": {"7": 8}}):
        swapped, report = qnn.quantize_model(net, **options)
        inplace = copy.deepcopy(net)
        got = nuq_rs.quantize_(inplace, **options)
        assert str(got) == str(report)
        assert inplace.nuq_bias_correction.rows == swapped.nuq_bias_correction.rows
        assert inplace.nuq_bias_correction.corrected == ["3", "7"]
        for name in ("0", "3", "7"):
            w = swapped.get_submodule(name)._decoded_weight()
            assert torch.equal(inplace.get_submodule(name).weight.dequantize(), w)
        plain = {k: v for k, v in inplace.state_dict().items() if not isinstance(v, PackedWeight)}
        for k, v in plain.items():
            assert torch.equal(v, swapped.state_dict()[k]), k
        x = torch.randn(4, 3, 4, 4)
        with torch.inference_mode():
            torch.testing.assert_close(inplace(x), swapped(x), rtol=1e-4, atol=1e-4)


def test_filters_overrides_and_bad_weights_are_clear():
    net = _net()
    report = nuq_rs.quantize_(net, modules=lambda m, name: isinstance(m, nn.Linear))
    assert [t.name for t in report.tensors] == ["3.weight"]
    assert type(net[0].weight) is nn.Parameter
    with pytest.raises(ValueError, match="module '3': '3.weight' is already quantized"):
        nuq_rs.quantize_(net)
    report = nuq_rs.quantize_(net, modules=["0"], overrides={"0": 8})
    assert net[0].weight.bits == 8 and report.tensors[0].bits == 8
    with pytest.raises(ValueError, match=r"modules name no quantizable module.*\['1', 'head'\]"):
        nuq_rs.quantize_(_net(), modules=["head", "1"])
    ints = _net()
    ints[3].weight = nn.Parameter(ints[3].weight.detach().to(torch.int32), requires_grad=False)
    before = ints[0].weight.detach().clone()
    with pytest.raises(ValueError, match="module '3': '3.weight' is torch.int32, not a floating"):
        nuq_rs.quantize_(ints)
    assert type(ints[0].weight) is nn.Parameter and torch.equal(ints[0].weight, before)
    with pytest.raises(ValueError, match="exclude patterns match no quantizable module"):
        nuq_rs.quantize_(_net(), exclude=["^head$"])
    with pytest.raises(ValueError, match="tensor '0.weight' is already quantized"):
        nuq_rs.quantize_state_dict(net.state_dict())


def test_int8_activations_option_reaches_the_kernel():
    torch.manual_seed(4)
    lin = nn.Linear(256, 64)
    x = torch.randn(64, 256)
    exact = copy.deepcopy(lin)
    nuq_rs.quantize_(exact, bias_correction=False)
    nuq_rs.quantize_(lin, bias_correction=False, activations="int8")
    assert lin.weight.int8 and not exact.weight.int8
    with torch.inference_mode():
        a, b = lin(x), exact(x)
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    twin = decoded_twin(lin)
    assert type(twin.weight) is nn.Parameter


@given(
    m=st.integers(1, 40),
    k=st.integers(1, 90),
    n=st.integers(1, 30),
    bits=st.integers(1, 8),
    gran=st.sampled_from([{}, {"granularity": "channel"}, {"group_size": 8}]),
    cut=st.integers(0, 30),
    seed=st.integers(0, 2**31),
)
def test_packed_ops_on_any_shape_match_the_decoded_weight(m, k, n, bits, gran, cut, seed):
    g = torch.Generator().manual_seed(seed)
    w = packed(torch.randn(n, k, generator=g), bits, **gran)
    wd = w.dequantize()
    x = torch.randn(m, k, generator=g)
    cut = min(cut, n)
    with Calls() as calls, torch.no_grad():
        y, yt = F.linear(x, w), x @ w.t()
        top = F.linear(x, w[cut:])
    assert calls.count == 3 and calls.worst < LUT_BOUND
    torch.testing.assert_close(y, yt)
    assert top.shape == (m, n - cut)
    assert torch.equal(w[cut:].dequantize(), wd[cut:])
    assert [p.shape[0] for p in w.split(7)] == [t.shape[0] for t in wd.split(7)]
    idx = torch.randint(0, n, (m,), generator=g)
    assert torch.equal(F.embedding(idx, w), wd[idx])


def test_a_fresh_process_reads_packed_state_dicts_and_nuq_rs_alone_imports_no_torch(tmp_path):
    import subprocess
    import sys

    net = _net()
    nuq_rs.quantize_(net, bias_correction=False)
    torch.save(net.state_dict(), tmp_path / "q.pt")
    code = (
        "import sys, torch, nuq_rs; "
        f"sd = torch.load({str(tmp_path / 'q.pt')!r}, weights_only=True); "
        "print(type(sd['3.weight']).__name__, sd['3.weight'].bits)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PackedWeight", "4"]
    code = "import sys, nuq_rs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
