"""nuq_rs.load_into: packed weights straight from a file, checked before anything
changes, in memory near the packed size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
from _packed_check import LUT_BOUND, Calls, no_full_decode  # noqa: E402
from torch import nn  # noqa: E402

import nuq_rs  # noqa: E402
from nuq_rs import PackedWeight  # noqa: E402


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 16),
    ).eval()


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = _net()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
    path = tmp_path / "net.nuq.safetensors"
    nuq_rs.quantize_state_dict(net.state_dict(), bits=3).save(path)
    return net, path


def test_packed_weights_come_from_the_file_and_match_its_decoded_state_dict(saved):
    net, path = saved
    fresh = _net()
    nuq_rs.load_into(fresh, path)
    assert isinstance(fresh[0].weight, PackedWeight) and fresh[0].weight.bits == 3
    assert type(fresh[0].bias) is nn.Parameter and fresh[0].bias.requires_grad
    assert torch.equal(fresh[1].running_mean, net[1].running_mean)
    reference = _net()
    reference.load_state_dict(nuq_rs.load(path).dequantize())
    x = torch.randn(4, 3, 5, 5)
    with Calls() as calls, torch.inference_mode():
        got = fresh(x)
    with torch.inference_mode():
        want = reference(x)
    assert calls.count == 2 and calls.worst < LUT_BOUND
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with no_full_decode(), torch.inference_mode():
        fresh(x)


def test_a_model_on_the_meta_device_needs_no_float_weights(saved):
    net, path = saved
    with torch.device("meta"):
        fresh = _net()
    nuq_rs.load_into(fresh, path)
    assert all(t.device.type == "cpu" for t in fresh.state_dict().values())
    x = torch.randn(2, 3, 5, 5)
    reference = _net()
    reference.load_state_dict(nuq_rs.load(path).dequantize())
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), reference(x), rtol=1e-4, atol=1e-5)


def test_mismatches_are_named_and_the_model_is_left_untouched(saved, tmp_path):
    _, path = saved
    wider = nn.Sequential(*list(_net())[:4], nn.Linear(8 * 5 * 5, 17), nn.Linear(17, 2))
    before = {k: (v, v.clone()) for k, v in wider.state_dict(keep_vars=True).items()}
    with pytest.raises(ValueError) as err:
        nuq_rs.load_into(wider, path)
    text = str(err.value)
    assert "nothing was loaded" in text
    assert "missing ['5.weight', '5.bias']" in text
    assert "4.weight: file [16, 200], model [17, 200]" in text
    assert "4.bias: file [16], model [17]" in text
    after = wider.state_dict(keep_vars=True)
    for key, (obj, value) in before.items():
        assert after[key] is obj and torch.equal(after[key], value), key
    smaller = nn.Sequential(*list(_net())[:4])
    with pytest.raises(ValueError, match=r"unexpected \['4.weight', '4.bias'\]"):
        nuq_rs.load_into(smaller, path)
    assert type(smaller[0].weight) is nn.Parameter


def test_tied_weights_stay_tied(tmp_path):
    from test_packed_models import TinyLM

    torch.manual_seed(1)
    lm = TinyLM().eval()
    path = tmp_path / "lm.nuq.safetensors"
    nuq_rs.quantize_state_dict(lm.state_dict(), bits=4).save(path)
    fresh = TinyLM().eval()
    nuq_rs.load_into(fresh, path)
    assert fresh.head.weight is fresh.wte.weight
    assert isinstance(fresh.attn.in_proj_weight, PackedWeight)
    tokens = torch.randint(0, 50, (2, 6))
    reference = TinyLM().eval()
    reference.load_state_dict(nuq_rs.load(path).dequantize())
    with torch.inference_mode():
        torch.testing.assert_close(fresh(tokens), reference(tokens), rtol=1e-4, atol=1e-5)


CHILD = textwrap.dedent(
    """
    import json, sys, torch, nuq_rs
    from torch import nn

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    def model(layers):
        with torch.device("meta"):
            return nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(layers)])

    x = torch.randn(2, 1024)
    # Warm up the code path on a one-layer file: imports and first-call setup
    # are not what is measured.
    nuq_rs.load_into(model(1), sys.argv[2])
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM)
    base = status("VmRSS")
    net = model(int(sys.argv[3]))
    nuq_rs.load_into(net, sys.argv[1])
    with torch.inference_mode():
        y = net(x)
    print(json.dumps({"growth": status("VmHWM") - base, "finite": bool(torch.isfinite(y).all())}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_stays_near_the_packed_size(tmp_path):
    """16 layers of 1024 x 1024: 67 MB in fp32, a 9 MB file at 4 bits. The child
    process builds the model on the meta device, loads the file and runs a forward
    pass; its peak RSS grows by about the packed size (measured: 10 MB)."""
    layers = 16
    torch.manual_seed(2)
    big = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(layers)])
    path, small = tmp_path / "big.nuq.safetensors", tmp_path / "small.nuq.safetensors"
    nuq_rs.quantize_state_dict(big.state_dict(), bits=4).save(path)
    one = nn.Sequential(nn.Linear(1024, 1024))
    nuq_rs.quantize_state_dict(one.state_dict(), bits=4).save(small)
    fp32 = sum(p.numel() * 4 for p in big.parameters())
    packed = path.stat().st_size
    assert fp32 > 7 * packed
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(small), str(layers)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["finite"]
    assert result["growth"] < 2 * packed, (result["growth"], packed, fp32)
