"""quantize_state_dict: defaults, overrides, exclusions, reports and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import nuq_rs

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_defaults_quantize_weights_and_keep_the_rest(net):
    sd = net.state_dict()
    q = nuq_rs.quantize_state_dict(sd, bits=4)
    assert list(q) == list(sd)
    assert q.quantized_names == ["conv.weight", "fc.weight"]
    assert q["bn.num_batches_tracked"] is sd["bn.num_batches_tracked"]
    out = q.dequantize()
    for k, v in sd.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype
    net.load_state_dict(out)
    torch.testing.assert_close(out["fc.bias"], sd["fc.bias"])


def test_quantized_model_stays_close(net):
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ref = net(x)
        net.load_state_dict(nuq_rs.quantize_state_dict(net.state_dict(), bits=8).dequantize())
        got = net(x)
    assert torch.allclose(got, ref, atol=0.05 * ref.abs().max().item())


def test_report_rows_and_totals(net):
    rep = nuq_rs.quantize_state_dict(net.state_dict(), bits=4).report()
    assert [t.name for t in rep.tensors] == list(net.state_dict())
    conv = rep["conv.weight"]
    assert conv.quantized and conv.bits == 4 and conv.family in ("gaussian", "laplace")
    assert conv.bytes_before == 8 * 27 * 4
    # Rows start on a byte; one short group of 27 per row (an fp16 scale each)
    # and the fitted codebook of 16 f32 levels.
    assert conv.bytes_after == 8 * 14 + 8 * 2 + 16 * 4
    assert 0 <= conv.d_gaussian <= 1 and 0 <= conv.d_laplace <= 1
    assert conv.clip > 0 and conv.mse > 0 and conv.sqnr_db > 10
    assert not rep["fc.bias"].quantized and rep["fc.bias"].bytes_after == 40
    assert rep.compression_ratio == pytest.approx(rep.bytes_before / rep.bytes_after)
    assert 4 < rep.bits_per_weight < 5
    text = str(rep)
    assert "conv.weight" in text and "quantized" in text and "D_gauss" in text
    assert len(rep.to_dicts()) == len(rep.tensors)


def test_overrides_and_exclude(net):
    q = nuq_rs.quantize_state_dict(
        net.state_dict(),
        bits=4,
        overrides={
            "fc.weight": 8,
            "conv.bias": {"bits": 2},
            "conv.weight": {"granularity": "channel"},
        },
        exclude=[r"^bn\."],
    )
    assert q["fc.weight"].bits == 8
    assert q["conv.bias"].bits == 2  # an override may quantize a 1-D tensor
    assert q["conv.weight"].config.granularity == "channel"
    q2 = nuq_rs.quantize_state_dict(net.state_dict(), exclude=["fc"])
    assert q2.quantized_names == ["conv.weight"]


def test_group_size_applies_to_all_and_rows_it_does_not_divide_get_a_short_group(net):
    q = nuq_rs.quantize_state_dict(net.state_dict(), group_size=32)
    assert q["fc.weight"].config.group_size == 32
    conv = q["conv.weight"]  # rows of 27 weights: one group of 27 each
    assert conv.config.group_size == 32 and conv.scale.shape == (8,)
    err = (conv.dequantize() - net.state_dict()["conv.weight"]).double().pow(2).sum()
    assert err.item() == pytest.approx(conv.sse, rel=1e-6)
    assert conv.sqnr_db > 15  # 4 bits on bell-shaped weights: about 20 dB
    q = nuq_rs.quantize_state_dict(
        net.state_dict(), group_size=32, overrides={"conv.weight": {"granularity": "channel"}}
    )
    assert q["conv.weight"].config.granularity == "channel"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            {"overrides": {"nope.weight": 8}},
            r"overrides name no tensor of the state dict: \['nope.weight'\]",
        ),
        ({"exclude": ["^decoder"]}, r"match no tensor.*\^decoder"),
        (
            {"overrides": {"fc.weight": 12}},
            r"overrides\['fc.weight'\]: bits must be in 1\.\.=8, got 12",
        ),
        ({"overrides": {"fc.weight": {"bitz": 3}}}, r"unknown options \['bitz'\]"),
        (
            {"overrides": {"bn.num_batches_tracked": 4}},
            r"\['bn.num_batches_tracked'\]: not a floating",
        ),
        ({"bits": 0}, r"bits must be in 1\.\.=8, got 0"),
        ({"granularity": "block"}, "unknown granularity"),
    ],
)
def test_bad_options(net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nuq_rs.quantize_state_dict(net.state_dict(), **kwargs)


def test_nan_names_the_tensor_and_returns_nothing(net):
    sd = net.state_dict()
    sd["fc.weight"][3, 5] = float("nan")
    with pytest.raises(nuq_rs.NonFiniteError, match=r"'fc.weight'.*index 869"):
        nuq_rs.quantize_state_dict(sd)


def test_mixed_dtypes_and_numpy_state_dict(net):
    sd = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in net.state_dict().items()
    }
    out = nuq_rs.quantize_state_dict(sd).dequantize()
    assert out["fc.weight"].dtype == torch.bfloat16
    npsd = {k: v.numpy() for k, v in net.state_dict().items()}
    out = nuq_rs.quantize_state_dict(npsd).dequantize()
    assert isinstance(out["fc.weight"], np.ndarray) and out["fc.weight"].dtype == np.float32


def test_input_is_not_modified(net):
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    nuq_rs.quantize_state_dict(sd, bits=2).dequantize()
    for k, v in net.state_dict().items():
        assert torch.equal(sd[k], v)


def test_empty_tensors_are_kept_on_every_path(tmp_path):
    """One planner, one rule: a tensor without elements is kept by the state-dict
    path, the command line on files and the module path alike (quantizing it would
    store a codebook for no weight, and the budget would count that)."""
    import warnings

    from safetensors.torch import save_file

    import nuq_rs.nn
    from nuq_rs.__main__ import main

    torch.manual_seed(0)
    sd = {"empty": torch.zeros(0, 8), "w": torch.randn(16, 64)}
    for options in ({}, {"overrides": {"empty": 8}}, {"target_bpw": 4.5}):
        q = nuq_rs.quantize_state_dict(sd, **options)
        assert q.quantized_names == ["w"]
        assert q.report()["empty"].bytes_after == 0
        assert q.report().bits_per_weight <= 8.0
    src, out = tmp_path / "in.safetensors", tmp_path / "out.nuq.safetensors"
    save_file(sd, src)
    assert main(["quantize", str(src), "-o", str(out), "--quiet", "--target-bpw", "4.5"]) == 0
    assert [t.name for t in nuq_rs.load(out).report() if t.quantized] == ["w"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: zero-element init is a no-op
        net = torch.nn.Sequential(torch.nn.Linear(0, 4), torch.nn.Linear(4, 4))
    qnet, report = nuq_rs.nn.quantize_model(net, bias_correction=False)
    assert [type(m).__name__ for m in qnet] == ["Linear", "NuqLinear"]
    assert [t.name for t in report] == ["1.weight"]


def test_the_three_paths_plan_alike(net, tmp_path):
    """quantize_state_dict, nuq-rs quantize on a file and nn.quantize_model decide
    the same options and produce the same codes for the same weights."""
    from safetensors.torch import save_file

    import nuq_rs.nn
    from nuq_rs.__main__ import main

    sd = net.state_dict()
    q = nuq_rs.quantize_state_dict(sd, overrides={"conv.weight": 3})
    src, out = tmp_path / "in.safetensors", tmp_path / "out.nuq.safetensors"
    save_file(sd, src)
    assert main(["quantize", str(src), "-o", str(out), "--quiet", "--bits-for", "conv=3"]) == 0
    loaded = nuq_rs.load(out)
    qnet, _ = nuq_rs.nn.quantize_model(net, overrides={"conv": 3}, bias_correction=False)
    assert q.quantized_names == ["conv.weight", "fc.weight"]
    for name in q.quantized_names:
        layer = qnet.get_submodule(name.removesuffix(".weight"))
        assert loaded[name].config == q[name].config.replace(family=q[name].family)
        np.testing.assert_array_equal(loaded[name].packed, q[name].packed)
        np.testing.assert_array_equal(layer.packed.numpy(), q[name].packed)
        assert layer.bits == q[name].bits and layer.group_size == q[name].config.group_size
