"""The pretrained MTCNN nets end to end: ``quantize_model`` (LUT layers on packed
codes) against the same nets with the decoded weights in float layers, on real
face / non-face crops (``skimage.data.lfw_subset``: 100 + 100, shipped offline)."""

from __future__ import annotations

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
from _mtcnn import INPUT_SIZE, lfw_faces, load_net  # noqa: E402
from test_nn import _dequantized  # noqa: E402
from torch import nn  # noqa: E402

import nuq_rs.nn as qnn  # noqa: E402

GROUP = 32

# Per layer the kernel equals F.linear / F.conv2d on the decoded weights within
# 1e-5 of sum |x w| (test_nn), i.e. a few fp32 roundings of the layer's own scale.
# Each later layer (|PReLU slope| <= 1.3 here) carries that along with its gain, so
# over 4-6 layers the heads (softmax probabilities, box and landmark offsets, all
# of order 1) may drift by some 1e-5 at worst; measured on these crops: <= 1.4e-6.
RTOL, ATOL = 1e-4, 1e-5

# Share of the 200 crops on which the 4-bit nets agree with fp32. Measured: PNet
# 98 %, RNet 100 %, ONet 99 % (tensor) / 100 % (groups of 32).
AGREEMENT_FLOOR = 0.95


def _groups_where_they_fit(net: nn.Module, bits: int = 4) -> dict:
    """Groups of GROUP weights, and per-channel scales for layers whose rows
    (prod(shape[1:])) GROUP does not divide (e.g. the 27-weight first convs)."""
    odd = {
        name: {"granularity": "channel", "group_size": None}
        for name, m in net.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d) and m.weight[0].numel() % GROUP
    }
    return {"bits": bits, "group_size": GROUP, "overrides": odd}


CONFIGS = {
    "4bit-tensor": lambda net: {"bits": 4, "granularity": "tensor", "codebook": "lloyd-max"},
    f"4bit-group{GROUP}": _groups_where_they_fit,
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """torch's OpenMP workers spin-wait after each op and starve the Rayon workers
    of the LUT kernel on a small machine (PNet on 200 crops: 0.04 s with one torch
    thread, up to 4.5 s with two on two cores). Results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fp32_nets(mtcnn_state_dicts) -> dict[str, tuple]:
    """Per net: (fp32 net, lfw crops at its input size, is_face, fp32 outputs)."""
    if importlib.util.find_spec("skimage") is None:
        if os.environ.get("CI"):
            raise RuntimeError("scikit-image must be installed in CI (see .ci/setup)")
        pytest.skip("scikit-image is not installed (pip install scikit-image)")
    out = {}
    for name, size in INPUT_SIZE.items():
        net = load_net(name, mtcnn_state_dicts[name])
        x, is_face = lfw_faces(size)
        out[name] = (net, x, is_face, _run(net, x))
    return out


def _run(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All heads flattened to (200, features); PNet's 1x1 maps become vectors."""
    with torch.inference_mode():
        return tuple(out.reshape(len(x), -1) for out in net(x))


@pytest.mark.parametrize("name", list(INPUT_SIZE))
def test_rebuilt_nets_load_strictly_and_tell_faces(name, fp32_nets):
    _, _, is_face, outs = fp32_nets[name]
    assert [o.shape[1] for o in outs] == [2, 4, 10][: len(outs)]
    accuracy = (outs[0].argmax(1) == is_face).float().mean().item()
    # Measured: PNet 97.5 %, RNet and ONet 100 %; a wrong flatten order gives 33-65 %.
    assert accuracy >= 0.95, f"{name}: fp32 face/non-face accuracy {accuracy:.1%}"


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(INPUT_SIZE))
def test_quantized_net_predicts_as_its_dequantized_twin(name, config, fp32_nets):
    net, x, is_face, fp32 = fp32_nets[name]
    qnet, _ = qnn.quantize_model(net, **CONFIGS[config](net))
    got, want = _run(qnet, x), _run(_dequantized(qnet), x)

    assert torch.equal(got[0].argmax(1), want[0].argmax(1))
    for head, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL, msg=f"{name} head {head}")

    pred, ref = got[0].argmax(1), fp32[0].argmax(1)
    agreement = (pred == ref).float().mean().item()
    accuracy = (pred == is_face).float().mean().item()
    accuracy_fp32 = (ref == is_face).float().mean().item()
    assert agreement >= AGREEMENT_FLOOR, (
        f"{name} {config}: agrees with fp32 on {agreement:.1%} of lfw_subset; "
        f"face/non-face accuracy {accuracy:.1%} (fp32 {accuracy_fp32:.1%})"
    )
