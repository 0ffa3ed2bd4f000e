"""Channel equalization through BatchNorm (nuq_rs._equalize): the fp32 function is
kept exactly, channel ranges become even, and it pairs with bias correction."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nuq_rs._bias import correct_biases  # noqa: E402
from nuq_rs._equalize import equalize  # noqa: E402


class _Net(nn.Module):
    def __init__(self, gen: torch.Generator, conv_bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=conv_bias)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn_dw = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for conv in (self.conv, self.dw):
                # channel ranges spread over three decades, as in depthwise kernels
                spread = torch.logspace(-2, 1, conv.out_channels)[:, None, None, None]
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * spread)
            for bn in (self.bn, self.bn_dw):
                bn.weight.copy_(torch.randn(8, generator=gen))
                bn.bias.copy_(torch.randn(8, generator=gen))
                bn.running_mean.copy_(torch.randn(8, generator=gen))
                bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
            # a near-dead channel: var close to eps, where var * s^2 alone is wrong
            self.bn_dw.running_var[0] = 2e-5

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = nn.functional.relu6(self.bn_dw(self.dw(h)))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("conv_bias", [False, True])
def test_equalize_keeps_the_function_and_evens_the_channels(conv_bias):
    gen = torch.Generator().manual_seed(5)
    net = _Net(gen, conv_bias).double().eval()
    before = copy.deepcopy(net.state_dict())
    eq = equalize(net)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # untouched
    assert [r[:2] for r in eq.rows] == [
        ("conv", "equalized"),
        ("dw", "equalized"),
        ("fc", "skipped"),
    ]
    assert eq.rows[2][2] == "the output does not go only to a BatchNorm"
    assert ("conv.bias" in eq.updates) == conv_bias

    new = copy.deepcopy(net)
    new.load_state_dict(eq.apply(net.state_dict()))
    for name in ("conv", "dw"):
        amax = getattr(new, name).weight.abs().flatten(1).amax(1)
        assert torch.allclose(amax, amax.max().expand_as(amax), rtol=1e-12)
    x = torch.randn(16, 3, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(new(x), net(x), rtol=1e-9, atol=1e-9)


def _rtn_tensor(w: torch.Tensor) -> torch.Tensor:
    """Symmetric round-to-nearest, one scale per tensor, 4 bits."""
    scale = w.abs().max() / 7
    return (w / scale).round().clamp(-7, 7) * scale


def test_equalize_helps_per_tensor_quantization_and_pairs_with_bias_correction():
    gen = torch.Generator().manual_seed(6)
    net = _Net(gen).double().eval()
    x = torch.randn(64, 3, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)

    def error(model, state):
        q = copy.deepcopy(model)
        q.load_state_dict(state)
        with torch.no_grad():
            return (q(x) - ref).pow(2).mean().item()

    sd = net.state_dict()
    plain = {k: _rtn_tensor(v) for k, v in sd.items() if v.ndim == 4}
    eq = equalize(net)
    sd_eq = eq.apply(sd)
    quant_eq = {k: _rtn_tensor(v) for k, v in sd_eq.items() if v.ndim == 4}
    assert error(net, {**sd_eq, **quant_eq}) < 0.5 * error(net, {**sd, **plain})

    # bias correction on the equalized weights: `reference` stands in for the model's
    # own tensors, the same as correcting a copy that holds them
    fix = correct_biases(net, quant_eq, reference=sd_eq)
    copy_eq = copy.deepcopy(net)
    copy_eq.load_state_dict(sd_eq)
    same = correct_biases(copy_eq, quant_eq)
    assert fix.rows == same.rows
    assert fix.updates.keys() == same.updates.keys() == {"bn_dw.running_mean"}
    assert torch.equal(fix.updates["bn_dw.running_mean"], same.updates["bn_dw.running_mean"])
    # without `reference`, eps would be measured against the unequalized weights
    wrong = correct_biases(net, quant_eq)
    assert not torch.allclose(
        wrong.updates["bn_dw.running_mean"], fix.updates["bn_dw.running_mean"]
    )


def test_equalize_skips_what_it_cannot_prove():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)
            self.side = nn.Conv2d(2, 2, 1)
            self.bn2 = nn.BatchNorm2d(2, track_running_stats=False)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y + self.bn2(self.side(x))

    rows = {name: (status, why) for name, status, why in equalize(Shared().eval()).rows}
    assert rows["conv"] == ("skipped", "the output does not go only to a BatchNorm")
    assert rows["side"] == ("skipped", "BatchNorm bn2 uses batch statistics")

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    eq = equalize(Branchy())
    assert eq.updates == {}
    assert eq.rows[0][0] == "conv" and eq.rows[0][2].startswith("model cannot be traced")
