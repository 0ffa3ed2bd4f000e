"""target_bpw: mixed precision to a size budget, every byte of metadata counted."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nuq_rs
from nuq_rs import _budget

_FIELDS = {f.name for f in dataclasses.fields(nuq_rs.QuantConfig)}


def _limit(report: nuq_rs.Report, target: float) -> int:
    """The budget in bits: floor(target * quantized weights)."""
    numel = sum(t.numel for t in report.tensors if t.quantized)
    return math.floor(Fraction(target) * numel)


def _used(report: nuq_rs.Report) -> int:
    return sum(8 * t.bytes_after for t in report.tensors if t.quantized)


def _options(sd, names) -> dict[str, list[_budget.Choice]]:
    """Every candidate of the tensors ``names`` (no BatchNorm weighing: the state
    dicts below have none)."""
    out = {}
    for name in names:
        shape = tuple(sd[name].shape)
        configs = _budget.candidate_configs(nuq_rs.QuantConfig(), shape, restrict=False)
        quantize = lambda n, c: nuq_rs.quantize_tensor(sd[n], **dataclasses.asdict(c), name=n)  # noqa: E731
        out[name] = _budget.choices_of(name, configs, quantize, None, None)
    return out


def _check_met_and_not_wasted(sd, target: float) -> nuq_rs.Report:
    report = nuq_rs.quantize_state_dict(sd, target_bpw=target).report()
    limit = _limit(report, target)
    assert _used(report) <= limit
    assert report.bits_per_weight <= target
    # Not wasted: no tensor could switch to a candidate of smaller proxy within the
    # bits left over.
    spare = limit - _used(report)
    chosen = [t.name for t in report.tensors if t.choice is not None]
    for name, opts in _options(sd, chosen).items():
        t = report[name]
        for c in opts:
            assert not (c.proxy < t.proxy and c.cost - 8 * t.bytes_after <= spare), (name, c)
    return report


@pytest.mark.parametrize("target", [2.5, 4.25, 6.0])
def test_budget_met_on_mtcnn(mtcnn_state_dicts, target):
    for sd in mtcnn_state_dicts.values():
        report = _check_met_and_not_wasted(sd, target)
        assert report.bits_per_weight > target - 0.5


@pytest.mark.parametrize("target", [3.0, 4.25])
def test_budget_met_on_fashion_cnn(target):
    pytest.importorskip("torch")
    from nuq_rs import _default_model as default

    _check_met_and_not_wasted(default.load_default_state_dict(), target)


def test_report_shows_choice_and_proxy():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    q = nuq_rs.quantize_state_dict(net.state_dict(), target_bpw=4.5)
    report = q.report()
    for name in ("0.weight", "2.weight"):
        t = report[name]
        assert t.choice == f"{t.bits}b " + (
            f"g{q[name].config.group_size}" if t.granularity == "group" else t.granularity
        )
        assert t.proxy == pytest.approx(q[name].sse / q[name].energy)
    assert report["0.bias"].choice is None and report["0.bias"].proxy is None
    text = str(report)
    assert "choice" in text.splitlines()[0] and "proxy" in text.splitlines()[0]
    assert report["0.weight"].choice in text
    plain = str(nuq_rs.quantize_state_dict(net.state_dict()).report())
    assert "proxy" not in plain


@pytest.mark.parametrize("target", [-1.0, 0.0, math.nan, math.inf, -math.inf])
def test_bad_targets(target):
    w = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="target_bpw must be a finite number > 0"):
        nuq_rs.quantize_state_dict({"w": w}, target_bpw=target)


def test_target_below_the_cheapest_choice_names_it():
    w = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    cheapest = 8 * nuq_rs.quantize_tensor(w, 2, granularity="tensor").storage_bytes / w.size
    with pytest.raises(ValueError, match=f"below the cheapest choice, {cheapest:.4f} bits"):
        nuq_rs.quantize_state_dict({"w": w}, target_bpw=cheapest - 0.01)
    q = nuq_rs.quantize_state_dict({"w": w}, target_bpw=cheapest)
    assert q.report().bits_per_weight == cheapest


def test_bits_and_target_together_are_refused():
    w = np.zeros((4, 64), np.float32) + np.arange(64, dtype=np.float32)
    with pytest.raises(ValueError, match="bits=3 cannot be combined with target_bpw"):
        nuq_rs.quantize_state_dict({"w": w}, bits=3, target_bpw=4.0)
    with pytest.raises(TypeError, match="target_bpw must be a number"):
        nuq_rs.quantize_state_dict({"w": w}, target_bpw="4")


def test_overrides_stay_fixed_and_count(rng):
    sd = {
        "a": rng.standard_normal((32, 128)).astype(np.float32),
        "b": rng.standard_normal((32, 128)).astype(np.float32),
    }
    fixed = 8 * nuq_rs.quantize_tensor(sd["a"], 8).storage_bytes
    target = (fixed + 3 * sd["b"].size) / 8192  # leaves "b" 3 bits per weight
    q = nuq_rs.quantize_state_dict(sd, target_bpw=target, overrides={"a": 8})
    report = q.report()
    assert report["a"].bits == 8 and report["a"].choice is None
    assert report["a"].bytes_after == fixed // 8
    assert report.bits_per_weight <= target
    assert 2.0 < report["b"].bits_per_weight <= 3.0


def test_granularity_restricts_the_candidates(rng):
    sd = {"w": rng.standard_normal((16, 128)).astype(np.float32)}
    # Groups of 32 are not the default (64), so every candidate has them.
    q = nuq_rs.quantize_state_dict(sd, target_bpw=4.6, group_size=32)
    assert q["w"].config.group_size == 32 and q.report().bits_per_weight <= 4.6


def test_allocation_gives_bits_where_the_proxy_is_larger():
    """Two tensors of equal size and costs; one's proxy is 4x the other's at every
    width (c * 4**-bits): the optimum gives it one bit more."""
    config = nuq_rs.QuantConfig()
    numel = 1000

    def options(c):
        return [_budget.Choice(config.replace(bits=b), b * numel, c * 4.0**-b) for b in range(2, 9)]

    chosen = _budget.allocate({"a": options(1.0), "b": options(4.0)}, 2 * numel, 0, 4.5)
    assert chosen["b"].config.bits == chosen["a"].config.bits + 1
    assert chosen["a"].cost + chosen["b"].cost <= 9 * numel


def test_allocation_exchanges_when_a_large_step_does_not_fit():
    """The sweep takes the small tensor's efficient step first and then the large
    tensor's step no longer fits; stepping the small one back makes room for it."""
    config = nuq_rs.QuantConfig()
    large = [_budget.Choice(config, 2000, 0.5), _budget.Choice(config.replace(bits=3), 3000, 0.1)]
    small = [_budget.Choice(config, 20, 0.05), _budget.Choice(config.replace(bits=8), 80, 0.0)]
    chosen = _budget.allocate({"large": large, "small": small}, 1000, 0, 3.05)
    assert chosen["large"].cost == 3000 and chosen["small"].cost == 20


def test_quantize_model_to_a_budget():
    torch = pytest.importorskip("torch")
    import nuq_rs.nn

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 6 * 6, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    ).eval()
    qnet, report = nuq_rs.nn.quantize_model(net, target_bpw=4.5, overrides={"6": 8})
    assert report.bits_per_weight <= 4.5
    assert report["6.weight"].bits == 8 and report["6.weight"].choice is None
    assert report["0.weight"].choice is not None and report["4.weight"].proxy > 0
    with torch.no_grad():
        assert qnet(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="below the cheapest choice"):
        nuq_rs.nn.quantize_model(net, target_bpw=1.5)


def test_cli_target_bpw(tmp_path, capsys, mtcnn_state_dicts):
    from safetensors.torch import save_file

    from nuq_rs.__main__ import main

    src = tmp_path / "onet.safetensors"
    save_file({k: v.contiguous() for k, v in mtcnn_state_dicts["onet"].items()}, src)
    out = tmp_path / "onet.nuq.safetensors"
    assert main(["quantize", str(src), "-o", str(out), "--target-bpw", "3.5"]) == 0
    printed = capsys.readouterr().out
    assert "choice" in printed and "proxy" in printed
    loaded = nuq_rs.load(out).report()
    assert 3.4 < loaded.bits_per_weight <= 3.5
    assert main(["quantize", str(src), "--target-bpw", "1"]) == 2
    assert "below the cheapest choice" in capsys.readouterr().err
    assert main(["quantize", str(src), "--target-bpw", "4", "--bits", "3"]) == 2
    assert "cannot be combined with target_bpw" in capsys.readouterr().err


@pytest.mark.parametrize("target", [4.0, 5.0, 6.0])
def test_heavy_tailed_tensor_gets_more_bits(rng, target):
    """Same size, one granularity, the paper's codebook: 5% of the weights three times
    larger make the relative error larger and slower to fall per bit, so that
    tensor gets more bits."""
    gaussian = rng.standard_normal((64, 256)).astype(np.float32)
    heavy = rng.standard_normal((64, 256)).astype(np.float32)
    heavy[rng.random(heavy.shape) < 0.05] *= 3
    sd = {"g": gaussian, "h": heavy}
    paper = {"codebook": "lloyd-max"} if "codebook" in _FIELDS else {}
    report = nuq_rs.quantize_state_dict(
        sd, target_bpw=target, granularity="channel", **paper
    ).report()
    assert report["h"].bits > report["g"].bits
    assert report.bits_per_weight <= target


def test_batchnorm_gains_found_in_state_dict_order():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)
    )
    with torch.no_grad():
        net[1].weight.copy_(torch.arange(1.0, 9.0))
        net[1].running_var.fill_(4.0)
    sd = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    gains = _budget.bn_gains(shapes, lambda k: sd[k].numpy())
    assert list(gains) == ["0.weight"]
    np.testing.assert_allclose(gains["0.weight"], np.arange(1.0, 9.0) / np.sqrt(4.0 + 1e-5))


@dataclasses.dataclass
class _Decoded:
    """What :func:`_budget.proxy` reads of a quantized tensor, with a known decoding."""

    decoded: np.ndarray
    sse: float
    energy: float
    dtype: str = "float32"
    torch: bool = False

    @classmethod
    def of(cls, original: np.ndarray, decoded: np.ndarray) -> _Decoded:
        w = original.astype(np.float64)
        return cls(decoded, float(np.sum((w - decoded) ** 2)), float(np.sum(w * w)))

    def dequantize(self) -> np.ndarray:
        return self.decoded


def test_batchnorm_gains_weigh_the_channels_errors(rng):
    """Each row's error and energy count at the square of its gain."""
    w = rng.standard_normal((4, 16)).astype(np.float32)
    w[0] *= 0.01  # a small row...
    noise = np.full(w.shape, 0.05, np.float32)
    q = _Decoded.of(w, w + noise)  # ...with the same absolute error as the others
    assert _budget.proxy(q, w, None) == pytest.approx(q.sse / q.energy)
    assert _budget.proxy(q, w, np.ones(4)) == pytest.approx(q.sse / q.energy)
    gains = np.array([100.0, 1.0, 1.0, 1.0])  # ...that reaches the next layer at full size
    row_energy = np.sum(w.astype(np.float64) ** 2, axis=1)
    expected = (gains**2 @ np.full(4, 16 * 0.05**2)) / (gains**2 @ row_energy)
    assert _budget.proxy(q, w, gains) == pytest.approx(expected, rel=1e-4)
    assert _budget.proxy(q, w, gains) > 100 * _budget.proxy(q, w, None)


@st.composite
def _state_dicts(draw):
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sd = {}
    for i in range(n):
        rows = draw(st.integers(1, 12))
        cols = draw(st.sampled_from([1, 3, 9, 32, 64, 96, 130]))
        sd[f"t{i}"] = (rng.standard_t(draw(st.sampled_from([3, 30])), (rows, cols))).astype(
            np.float32
        )
    return sd


@given(_state_dicts(), st.floats(0.0, 1.0))
def test_any_feasible_target_is_met(sd, u):
    options = _options(sd, list(sd))
    numel = sum(w.size for w in sd.values())
    # the float just above the cheapest: the budget is exact, floor(target * numel)
    low = math.nextafter(sum(min(c.cost for c in o) for o in options.values()) / numel, math.inf)
    high = sum(max(c.cost for c in o) for o in options.values()) / numel
    target = low + u * (high - low)
    report = nuq_rs.quantize_state_dict(sd, target_bpw=target).report()
    assert report.bits_per_weight <= target
    assert _used(report) <= _limit(report, target)


def test_checkpoint_bfloat16_bits_widen_exactly():
    torch = pytest.importorskip("torch")
    x = torch.randn(5, 7).to(torch.bfloat16)
    bits = x.view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(_budget._widen(bits, "BF16"), x.float().numpy())
    np.testing.assert_array_equal(_budget._widen(x.half().numpy(), "F16"), x.float().numpy())


def test_cli_target_bpw_on_a_bfloat16_checkpoint_with_batchnorm(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from nuq_rs.__main__ import main

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Conv2d(16, 8, 3)
    )
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2.0)
    src = tmp_path / "net.pt"
    torch.save(
        {
            k: v.to(torch.bfloat16) if v.is_floating_point() else v
            for k, v in net.state_dict().items()
        },
        src,
    )
    assert main(["quantize", str(src), "--target-bpw", "6"]) == 0
    out = capsys.readouterr().out
    assert "0.weight" in out and "proxy" in out
