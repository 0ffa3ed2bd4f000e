"""The LUT layers keep NumPy views of their weights and biases between calls
(``nuq_rs._views``): whatever replaces or rewrites them after a first call must
show in the next one. References: ``F.linear`` / ``F.conv2d`` on the decoded
weights of the layer that was loaded."""

from __future__ import annotations

import copy
import io

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nuq_rs  # noqa: E402
import nuq_rs.nn as qnn  # noqa: E402
from nuq_rs._views import NumpyViews, f32_array  # noqa: E402


def _linear_ref(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a NuqLinear or a quantize_'d nn.Linear should give for ``x``."""
    if isinstance(layer, qnn.NuqLinear):
        return F.linear(x, layer.dequantize().weight, layer.bias)
    return F.linear(x, layer.weight.dequantize(), layer.bias)


def _quantized_linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(40, 24)
    nuq_rs.quantize_(lin, bits=4, group_size=8)
    return lin


def _nuq_linear(seed: int) -> qnn.NuqLinear:
    torch.manual_seed(seed)
    return qnn.NuqLinear.from_float(nn.Linear(40, 24), bits=4)


@pytest.mark.parametrize("build", [_nuq_linear, _quantized_linear], ids=["NuqLinear", "quantize_"])
@pytest.mark.parametrize("assign", [False, True])
def test_linear_follows_load_state_dict_after_a_call(build, assign):
    a, b = build(0), build(1)
    x = torch.randn(3, 40)
    with torch.no_grad():
        before = a(x)
        a.load_state_dict(b.state_dict(), assign=assign)
        after = a(x)
        torch.testing.assert_close(after, _linear_ref(b, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_nuq_conv2d_follows_load_state_dict_after_a_call():
    torch.manual_seed(0)
    a = qnn.NuqConv2d.from_float(nn.Conv2d(3, 5, 3, padding=1), bits=4)
    b = qnn.NuqConv2d.from_float(nn.Conv2d(3, 5, 3, padding=1), bits=4)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = a(x)
        a.load_state_dict(b.state_dict())
        want = F.conv2d(x, b.dequantize().weight, b.bias, padding=1)
        torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, a(x))


def test_biases_replaced_or_written_in_place_after_a_call():
    lin = _quantized_linear(0)
    q = qnn.NuqLinear.from_float(nn.Linear(40, 24), bits=4)
    x = torch.randn(2, 40)
    with torch.no_grad():
        for layer in (lin, q):
            layer(x)
            layer.bias.add_(1.0)  # in place: the kept view sees it
            torch.testing.assert_close(layer(x), _linear_ref(layer, x))
            layer.bias.data = torch.randn(24)  # new memory under the same object
            torch.testing.assert_close(layer(x), _linear_ref(layer, x))
            layer.bias.data = torch.randn(48)[::2]  # not contiguous: copied per call
            torch.testing.assert_close(layer(x), _linear_ref(layer, x))
        q.bias = torch.randn(24)  # a new buffer
        torch.testing.assert_close(q(x), _linear_ref(q, x))
        q.bias = None
        torch.testing.assert_close(q(x), _linear_ref(q, x))


def test_copies_run_on_their_own_weights():
    lin, other = _quantized_linear(0), _quantized_linear(1)
    q = qnn.NuqLinear.from_float(nn.Linear(40, 24), bits=4)
    q_other = qnn.NuqLinear.from_float(nn.Linear(40, 24), bits=4)
    x = torch.randn(2, 40)
    with torch.no_grad():
        for layer, source in ((lin, other), (q, q_other)):
            want = layer(x)
            twin = copy.deepcopy(layer)
            twin.load_state_dict(source.state_dict())
            torch.testing.assert_close(twin(x), source(x))
            torch.testing.assert_close(layer(x), want)
            buf = io.BytesIO()
            torch.save(layer, buf)
            buf.seek(0)
            torch.testing.assert_close(torch.load(buf, weights_only=False)(x), want)


def test_numpy_views_are_rebuilt_only_for_other_tensors_or_memory():
    a, b = torch.arange(4.0), torch.zeros(2)
    views = NumpyViews()
    first = views.of((a, b))
    assert views.of((a, b)) is first
    assert views.of((a, torch.zeros(2))) is not first
    kept = views.of((a, b))
    a.data = torch.ones(4)
    assert views.of((a, b))[0].tolist() == [1.0] * 4 and views.of((a, b)) is not kept
    assert views.one(b) is views.one(b)
    assert copy.deepcopy(views).of((a, b)) is not views.of((a, b))


def test_f32_array_shares_memory_only_when_nothing_needs_converting():
    x = torch.randn(3, 4)
    assert f32_array(x).__array_interface__["data"][0] == x.data_ptr()
    for other in (x.double(), x.t(), x.requires_grad_(True)):
        arr = f32_array(other)
        assert arr.dtype.name == "float32" and arr.flags["C_CONTIGUOUS"]
        assert (arr == other.detach().float().numpy()).all()
