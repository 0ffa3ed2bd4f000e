"""LUT layers against torch's own float layers run on the decoded weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nuq_rs

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nuq_rs.nn as qnn  # noqa: E402

GRANS = [{}, {"granularity": "channel"}, {"group_size": 4}]


def rel_err(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> float:
    """Max error relative to sum_j |x_j w_rj| (the scale of fp32 rounding)."""
    got, want, x, w = (t.detach() for t in (got, want, x, w))
    bound = x.abs().reshape(-1, x.shape[-1]) @ w.abs().T
    return float(((got - want).abs().reshape(bound.shape) / (bound + 1e-30)).max())


@given(
    m=st.integers(1, 300),
    k_groups=st.integers(1, 40),
    n=st.integers(1, 70),
    bits=st.integers(1, 8),
    gran=st.sampled_from(GRANS),
    seed=st.integers(0, 2**31),
)
def test_linear_matches_f_linear_on_decoded_weights(m, k_groups, n, bits, gran, seed):
    k = 4 * k_groups + (0 if gran else seed % 4)  # odd K where groups allow it
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * 0.1)
    q = qnn.NuqLinear.from_float(lin, bits=bits, **gran)
    x = torch.randn(m, k, generator=g)
    with torch.no_grad():
        got = q(x)
        w = q.dequantize().weight
        want = F.linear(x, w, lin.bias)
    assert rel_err(got - lin.bias, want - lin.bias, x, w) < 1e-5


@pytest.mark.parametrize(
    "conv",
    [
        dict(in_channels=3, out_channels=8, kernel_size=3),
        dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=(1, 0)),
        dict(in_channels=4, out_channels=8, kernel_size=3, dilation=2, padding=2, groups=2),
        dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8, bias=False),
    ],
    ids=["plain", "stride-pad", "dilated-grouped", "depthwise"],
)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_conv2d_matches_f_conv2d_on_decoded_weights(conv, bits):
    torch.manual_seed(bits)
    layer = nn.Conv2d(**conv)
    q = qnn.NuqConv2d.from_float(layer, bits=bits, granularity="channel")
    x = torch.randn(2, conv["in_channels"], 11, 9)
    with torch.inference_mode():
        got = q(x)
        ref = q.dequantize()
        want = ref(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_subclasses_are_swapped_and_exclude_keeps_layers():
    class MyLinear(nn.Linear):
        pass

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), MyLinear(4 * 6 * 6, 5))
    qnet, report = qnn.quantize_model(net, bits=4)
    assert [type(m).__name__ for m in qnet] == ["NuqConv2d", "Flatten", "NuqLinear"]
    assert type(net[2]) is MyLinear  # not in place: the original is untouched
    assert [t.name for t in report.tensors] == ["0.weight", "2.weight"]
    kept, _ = qnn.quantize_model(net, bits=4, exclude=["^0$"], overrides={"2": 8})
    assert type(kept[0]) is nn.Conv2d and kept[2].bits == 8
    same, _ = qnn.quantize_model(net, inplace=True)
    assert same is net and type(net[0]) is qnn.NuqConv2d


def test_state_dict_stays_packed_and_reloads():
    lin = nn.Linear(256, 64)
    q = qnn.NuqLinear.from_float(lin, bits=3)
    sd = q.state_dict()
    assert sd["packed"].dtype == torch.uint8 and sd["packed"].numel() == 64 * 96
    assert sum(v.numel() * v.element_size() for v in sd.values()) < 0.15 * 256 * 64 * 4
    twin = qnn.NuqLinear.from_float(nn.Linear(256, 64), bits=3)
    twin.load_state_dict(sd)
    x = torch.randn(3, 256)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), q(x))
    # dequantize() decodes what was loaded, not what the twin was built from.
    torch.testing.assert_close(twin.dequantize().weight, q.dequantize().weight)


def test_training_through_it_is_refused_and_bad_input_is_clear():
    q = qnn.NuqLinear.from_float(nn.Linear(8, 4))
    x = torch.randn(2, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        q(x)
    with torch.no_grad():
        with pytest.raises(ValueError, match="9 features but the layer expects 8"):
            q(torch.randn(2, 9))
        assert q(torch.randn(0, 8)).shape == (0, 4)
        assert q(torch.randn(2, 3, 8)).shape == (2, 3, 4)
        assert q(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64
        assert q(torch.randn(16, 8)[:, ::1].t().contiguous().t()).shape == (16, 4)
    with pytest.raises(ValueError, match="options"):
        qnn.quantize_model(nn.Sequential(nn.Linear(8, 4)), overrides={"0": {"bitz": 2}})
    with pytest.raises(ValueError, match="match no Linear/Conv2d"):
        qnn.quantize_model(nn.Sequential(nn.Linear(8, 4)), exclude=["^head"])


def test_conv2d_bad_input_is_clear_and_odd_layouts_work():
    layer = nn.Conv2d(4, 6, 3, padding=1)
    q = qnn.NuqConv2d.from_float(layer, bits=4)
    with torch.inference_mode():
        with pytest.raises(ValueError, match=r"expected input \[batch, 4, height, width\]"):
            q(torch.randn(2, 3, 8, 8))
        with pytest.raises(ValueError, match="kernel height spans 3 but the padded input"):
            qnn.NuqConv2d.from_float(nn.Conv2d(4, 6, 3), bits=4)(torch.randn(1, 4, 1, 5))
        assert q(torch.randn(0, 4, 8, 8)).shape == (0, 6, 8, 8)
        x = torch.randn(2, 4, 7, 5)
        want = q(x)
        torch.testing.assert_close(q(x.to(memory_format=torch.channels_last)), want)
        torch.testing.assert_close(q(x.double()), want.double())
        assert q(x.double()).dtype == torch.float64


def test_kernel_errors_are_clean_value_errors():
    lin = nn.Linear(16, 4)
    q = nuq_rs.quantize_tensor(lin.weight, bits=4)
    x = np.ones((2, 16), np.float32)
    with pytest.raises(ValueError, match="packed"):
        nuq_rs._nuq_rs.linear(x, q.packed[:-1], q.levels, q.loc, q.scale, 4, 16, 4)
    with pytest.raises(ValueError, match="bias"):
        nuq_rs._nuq_rs.linear(
            x, q.packed, q.levels, q.loc, q.scale, 4, 16, 4, None, np.ones(3, np.float32)
        )


def test_fashion_cnn_predictions_match_the_dequantized_model(fashion_cnn):
    model, images, labels = fashion_cnn
    for kwargs in ({"bits": 4}, {"bits": 3, "granularity": "channel"}):
        qmodel, _ = qnn.quantize_model(model, **kwargs)
        reference = _dequantized(qmodel)
        with torch.inference_mode():
            got = qmodel(images).argmax(1)
            want = reference(images).argmax(1)
        assert torch.equal(got, want)
        assert (got == labels).float().mean() > 0.85


def _dequantized(qmodel: nn.Module) -> nn.Module:
    import copy

    model = copy.deepcopy(qmodel)
    for name, module in list(model.named_modules()):
        if isinstance(module, qnn.NuqLinear | qnn.NuqConv2d):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.dequantize())
    return model


def _conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 1, bias=False),
        nn.BatchNorm2d(32),
    )
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_quantize_model_corrects_biases_into_the_batchnorm_after():
    net = _conv_bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    qnet, _ = qnn.quantize_model(net, bits=2)
    plain, _ = qnn.quantize_model(net, bits=2, bias_correction=False)
    for k, v in net.state_dict().items():  # the float model is left alone
        assert torch.equal(v, before[k]), k
    rows = {layer: status for layer, status, _ in qnet.nuq_bias_correction.rows}
    # The second conv's input mean follows from BN + ReLU; the first sees the image.
    assert rows == {"0": "skipped", "3": "corrected"}
    want = qnet.nuq_bias_correction.updates["4.running_mean"]
    assert torch.equal(qnet[4].running_mean, want)
    assert not torch.equal(want, net[4].running_mean)
    assert torch.equal(plain[4].running_mean, net[4].running_mean)
    # Inputs whose statistics match the first BatchNorm's: the corrected model's
    # mean output per channel is closer to fp32's than the uncorrected one's.
    torch.manual_seed(1)
    x = torch.randn(256, 3, 8, 8)
    with torch.no_grad():
        h = net[2](net[1](net[0](x)))
        ref = net[4](net[3](h)).mean((0, 2, 3))

        def second_half(m: nn.Module) -> torch.Tensor:
            return m[4](m[3](h)).mean((0, 2, 3))

        fixed, unfixed = second_half(qnet) - ref, second_half(plain) - ref
    assert fixed.abs().mean() < 0.5 * unfixed.abs().mean()
