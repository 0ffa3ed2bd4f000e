"""Real architectures with packed weights (``nuq_rs.quantize_``), each against the
same model with the decoded weights loaded as float parameters.

Two checks per model: every LUT call the forward makes stays within the kernels'
stated bound of fp32 on the decoded weights (``_packed_check.Calls``), and the
model's outputs match its decoded twin's (the per-layer errors carried through
the layers, as in ``test_mtcnn_model``: RTOL, ATOL below)."""

from __future__ import annotations

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
from _mtcnn import INPUT_SIZE, lfw_faces, load_net  # noqa: E402
from _packed_check import LUT_BOUND, Calls, decoded_twin, no_full_decode  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nuq_rs  # noqa: E402
import nuq_rs.nn as qnn  # noqa: E402
from nuq_rs import PackedWeight  # noqa: E402

# Outputs of order 1 after a few layers, each within 1e-5 of sum |x w| (see
# test_mtcnn_model for the reasoning); deeper nets get a looser relative bound.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread: its spinning OpenMP workers starve the LUT kernels' on a
    2-core machine (see test_mtcnn_model); results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _compare(model: nn.Module, *inputs: torch.Tensor, rtol=RTOL, atol=ATOL) -> tuple:
    """Runs the packed model (checking every LUT call) and its decoded twin."""
    twin = decoded_twin(model)
    with Calls() as calls, torch.inference_mode():
        got = model(*inputs)
    with torch.inference_mode():
        want = twin(*inputs)
    assert calls.count > 0 and calls.worst < LUT_BOUND, (calls.count, calls.worst)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
    return got, want, calls


def _skip_without_skimage() -> None:
    if importlib.util.find_spec("skimage") is None:
        if os.environ.get("CI"):
            raise RuntimeError("scikit-image must be installed in CI (see .ci/setup)")
        pytest.skip("scikit-image is not installed (pip install scikit-image)")


@pytest.mark.parametrize("name", list(INPUT_SIZE))
def test_mtcnn_nets(name, mtcnn_state_dicts):
    _skip_without_skimage()
    net = load_net(name, mtcnn_state_dicts[name])
    report = nuq_rs.quantize_(net, bits=4, granularity="channel")
    layers = [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    assert len(report.tensors) == len(layers)
    assert all(isinstance(m.weight, PackedWeight) for m in layers)
    x, _ = lfw_faces(INPUT_SIZE[name])
    got, want, calls = _compare(net, x)
    assert calls.count == len(layers)
    assert torch.equal(got[0].argmax(1), want[0].argmax(1))


def test_fashion_cnn(fashion_cnn):
    model, images, labels = fashion_cnn
    import copy

    net = copy.deepcopy(model)
    nuq_rs.quantize_(net, bits=4)
    got, want, _ = _compare(net, images[:500], rtol=1e-4, atol=1e-4)
    assert torch.equal(got[0].argmax(1), want[0].argmax(1))
    assert (got[0].argmax(1) == labels[:500]).float().mean() > 0.85


def _photos() -> torch.Tensor:
    """Four photos that ship in scikit-image, 224x224, ImageNet-normalised."""
    import skimage.data as sk

    imgs = [getattr(sk, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    out = []
    for img in imgs:
        x = torch.from_numpy(img[..., :3].copy()).permute(2, 0, 1).float().unsqueeze(0) / 255
        out.append(F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (torch.cat(out) - mean) / std


def test_mobilenet_v2_matches_quantize_model_and_its_decoded_twin(mobilenet_v2):
    """The options of the issue-19 evaluation (target_bpw=4.5 with bias correction):
    quantize_ gives quantize_model's decoded weights and corrected biases exactly."""
    _skip_without_skimage()
    import copy

    swapped, report = qnn.quantize_model(mobilenet_v2, target_bpw=4.5)
    net = copy.deepcopy(mobilenet_v2)
    assert str(nuq_rs.quantize_(net, target_bpw=4.5)) == str(report)
    assert net.nuq_bias_correction.rows == swapped.nuq_bias_correction.rows
    packed = {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    assert len(packed) == len(report.tensors) == 53
    for name, module in packed.items():
        want = swapped.get_submodule(name)
        assert torch.equal(module.weight.dequantize(), want._decoded_weight()), name
        if module.bias is not None:
            assert torch.equal(module.bias, want.bias), name
    for key, value in net.state_dict().items():
        if not isinstance(value, PackedWeight) and key in swapped.state_dict():
            assert torch.equal(value, swapped.state_dict()[key]), key
    x = _photos()
    got, want, calls = _compare(net, x, rtol=1e-3, atol=1e-3)
    assert calls.count == 53
    assert torch.equal(got[0].argmax(1), want[0].argmax(1))
    with torch.inference_mode():
        torch.testing.assert_close(swapped(x), got[0], rtol=1e-3, atol=1e-3)


class TinyLM(nn.Module):
    """Token embeddings tied to the output head, one self-attention block."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.wte(tokens)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(self.norm(h + a))


def test_multihead_attention_and_tied_embeddings():
    torch.manual_seed(5)
    lm = TinyLM().eval()
    report = nuq_rs.quantize_(lm, bits=4)
    assert [t.name for t in report.tensors] == [
        "wte.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
    ]
    assert lm.head.weight is lm.wte.weight and isinstance(lm.wte.weight, PackedWeight)
    assert isinstance(lm.attn.in_proj_weight, PackedWeight)
    tokens = torch.randint(0, 50, (3, 7))
    _, _, calls = _compare(lm, tokens)
    assert calls.count == 3  # in_proj, out_proj, the tied head
    with no_full_decode(), torch.inference_mode():
        lm(tokens)
    sd = lm.state_dict()
    assert sd["head.weight"].packed.data_ptr() == sd["wte.weight"].packed.data_ptr()


class Conv1D(nn.Module):
    """Hugging Face GPT-2's transposed linear: weight (in, out), addmm in forward."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def test_conv1d_style_transposed_linear():
    torch.manual_seed(6)
    mlp = nn.Sequential(Conv1D(96, 32), nn.GELU(), Conv1D(32, 96))
    nuq_rs.quantize_(mlp, bits=4)
    w = mlp[0].weight
    assert isinstance(w, PackedWeight) and w.shape == (32, 96) and w.transposed
    assert w.stored_shape == (96, 32)  # quantized per output channel, as a Linear
    x = torch.randn(2, 5, 32)
    _, _, calls = _compare(mlp, x)
    assert calls.count == 2
    with no_full_decode(), torch.inference_mode():
        mlp(x)


class Conv2dSamePadding(nn.Conv2d):
    """A Conv2d subclass that pads in its own forward (TensorFlow's "SAME", as
    EfficientNet ports do): stride 2 pads one pixel less on the top/left."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SameBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = Conv2dSamePadding(8, 8, 3, stride=2, bias=False)
        self.skip = Conv2dSamePadding(8, 8, 1, stride=2)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.down(x))) + self.skip(x)


def test_conv_subclass_keeps_its_own_padding():
    torch.manual_seed(7)
    net = nn.Sequential(Conv2dSamePadding(3, 8, 3), SameBlock(), SameBlock()).eval()
    x = torch.randn(2, 3, 27, 27)
    with torch.inference_mode():
        shape = net(x).shape
    nuq_rs.quantize_(net, bits=4)
    assert type(net[1].down) is Conv2dSamePadding
    assert isinstance(net[1].down.weight, PackedWeight)
    got, _, calls = _compare(net, x)
    assert got[0].shape == shape == (2, 8, 7, 7) and calls.count == 5


def test_conv1d_modules_and_a_standalone_embedding():
    torch.manual_seed(8)
    net = nn.Sequential(
        nn.Embedding(40, 16),
        Transpose(),
        nn.Conv1d(16, 24, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(24, 24, 3, stride=2, groups=4),
    ).eval()
    report = nuq_rs.quantize_(net, bits=4, group_size=8)
    assert [t.name for t in report.tensors] == ["0.weight", "2.weight", "4.weight"]
    tokens = torch.randint(0, 40, (3, 17))
    got, _, calls = _compare(net, tokens)
    assert got[0].shape == (3, 24, 8) and calls.count == 2


class Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)
