"""Data-free bias correction for quantized conv/linear layers next to BatchNorm.

Nagel et al. 2019, "Data-Free Quantization through Weight Equalization and Bias
Correction" (section 4.2). Quantizing a layer ``y = W x + b`` to ``W_q = W + eps``
shifts its expected output by ``eps @ E[x]``; subtracting that shift from the bias
gives back the fp32 mean of every output channel. ``E[x]`` is found without data:
when ``x`` is produced by a BatchNorm, the pre-activation of each channel is taken
as ``N(beta, gamma^2)`` (the BatchNorm's bias and weight), and the mean of the
activation after it has a closed form (identity, ReLU, ReLU6/Hardtanh, LeakyReLU)
or is integrated numerically on a fine grid (SiLU, GELU, Hardswish, ...).

The structure comes from a ``torch.fx`` trace of the model, so it is certain: a
layer is corrected only when every node between its input and the BatchNorm(s)
is one whose effect on the mean is known (activations, dropout, identity, average
pooling, flatten, concatenation, and residual sums whose summands all have known
means). Everything else is skipped with a reason. The corrected quantity is the
layer's ``bias``; a layer without bias whose output goes only to a BatchNorm gets
the shift folded into that BatchNorm's ``running_mean`` instead (BatchNorm
subtracts its running mean, so ``running_mean += eps @ E[x]``).

Approximations (those of the paper): the BatchNorm statistics describe the data;
for a convolution, ``E[x]`` is per input channel and the same at every position,
so the border positions of a zero-padded convolution, which see zeros, are
corrected as if they saw the channel mean; a residual sum's mean is the sum of
its summands' means, and what follows a sum, a pooling or a concatenation is not
assumed Gaussian any more (an activation after it is skipped).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)).eval()
>>> w = net[2].weight.detach()
>>> fix = correct_biases(net, {"2.weight": w + 0.01})
>>> sorted(fix.updates), fix.rows[0][1]
(['2.bias'], 'corrected')
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["BiasCorrection", "correct_biases", "normal_clip_mean"]

CORRECTED = "corrected"
SKIPPED = "skipped"
_GRID = torch.linspace(-12.0, 12.0, 4801, dtype=torch.float64)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass
class BiasCorrection:
    """What :func:`correct_biases` found.

    ``updates`` maps state-dict names (a layer's ``bias`` or a BatchNorm's
    ``running_mean``) to corrected tensors, in the dtype and device of the model's.
    ``rows`` holds ``(layer, status, detail)`` for every quantized weight: status is
    ``"corrected"`` (detail: where the shift went and the path of ``E[x]``) or
    ``"skipped"`` (detail: why).
    """

    updates: dict[str, Tensor] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def corrected(self) -> list[str]:
        """Names of the layers that were corrected."""
        return [name for name, status, _ in self.rows if status == CORRECTED]

    def apply(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A copy of ``state_dict`` with the updates in it."""
        out = dict(state_dict)
        out.update(self.updates)
        return out


def normal_clip_mean(
    mean: Tensor, std: Tensor, low: float = -math.inf, high: float = math.inf
) -> Tensor:
    """``E[clip(z, low, high)]`` for ``z ~ N(mean, std^2)``, elementwise, in float64.

    ``low=0`` is ReLU, ``(0, 6)`` is ReLU6. With ``a = (low - mean) / std`` and
    ``c = (high - mean) / std``:
    ``low * Phi(a) + high * Phi(-c) + mean * (Phi(c) - Phi(a)) + std * (phi(a) - phi(c))``
    (infinite bounds drop their term; ``std = 0`` gives ``clip(mean)``).

    >>> float(normal_clip_mean(torch.tensor(0.0), torch.tensor(1.0), 0.0))  # 1/sqrt(2 pi)
    0.3989422804014327
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64).abs()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    a = (low - mean) / safe
    c = (high - mean) / safe
    # P(low < z < high) without cancellation in either tail.
    inside = torch.where(
        a > 0,
        torch.special.ndtr(-a) - torch.special.ndtr(-c),
        torch.special.ndtr(c) - torch.special.ndtr(a),
    )
    out = mean * inside + safe * (_pdf(a) - _pdf(c))
    if math.isfinite(low):
        out = out + low * torch.special.ndtr(a)
    if math.isfinite(high):
        out = out + high * torch.special.ndtr(-c)
    return torch.where(std > 0, out, mean.clamp(low, high))


def _pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) / _SQRT_2PI


def _numeric_mean(fn: Callable[[Tensor], Tensor], mean: Tensor, std: Tensor) -> Tensor:
    """``E[fn(z)]``, ``z ~ N(mean, std^2)``: trapezoid rule in float64 on +-12 std, step
    0.005 std (error ~1e-6 relative for activations with a kink, far less for smooth
    ones)."""
    t = _GRID
    weights = _pdf(t) * (t[1] - t[0])
    z = mean[:, None] + std.abs()[:, None] * t[None, :]
    return (fn(z).double() * weights).sum(-1)


class _Skip(Exception):
    """A layer cannot be corrected: the message says why."""


@dataclass(frozen=True)
class _Moments:
    """The per-channel expectation of a node's output.

    ``std`` is set while the channels are ``N(mean, std^2)`` (a BatchNorm's output,
    maybe shifted). ``layout``: ``"spatial"`` (channels on dim 1, positions after),
    ``"vector"`` (channels on dim 1 of a 2-D tensor, or unknown rank after a
    BatchNorm1d), ``"flat"`` (flattened from ``[N, C, ...]``: each channel's
    positions are consecutive features).
    """

    mean: Tensor
    std: Tensor | None
    layout: str
    path: str

    def through(self, what: str, mean: Tensor | None = None, **kw) -> _Moments:
        args = {"mean": self.mean if mean is None else mean, "std": self.std}
        args.update(layout=self.layout, path=f"{self.path} -> {what}")
        args.update(kw)
        return _Moments(**args)


_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_PASS_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.clone}
_PASS_METHODS = {"contiguous", "clone", "float", "detach"}
_NUMERIC_MODULES = (
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Mish,
    nn.Softplus,
)
_NUMERIC_FUNCTIONS = {
    F.silu,
    F.gelu,
    F.hardswish,
    F.hardsigmoid,
    F.elu,
    F.celu,
    F.selu,
    F.mish,
    F.softplus,
    torch.sigmoid,
    torch.tanh,
    F.sigmoid,
    F.tanh,
}
_NUMERIC_METHODS = {"sigmoid", "tanh"}
_RELU = {F.relu, torch.relu, torch.relu_}
_AVG_POOL_FUNCTIONS = {
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
}
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADDS = {operator.add, operator.iadd, torch.add}
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_KNOWN_MODULES = (
    _PASS_MODULES
    + (nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.Flatten)
    + _NUMERIC_MODULES
    + _ADAPTIVE_AVG
    + _AVG_POOL
)
_KNOWN_FUNCTIONS = (
    _PASS_FUNCTIONS
    | _RELU
    | _NUMERIC_FUNCTIONS
    | _AVG_POOL_FUNCTIONS
    | {F.relu6, F.hardtanh, F.leaky_relu, torch.clamp, torch.clip, torch.flatten, torch.mean}
)
_KNOWN_METHODS = (
    _PASS_METHODS
    | _NUMERIC_METHODS
    | {
        "relu",
        "relu_",
        "clamp",
        "clamp_",
        "clip",
        "clip_",
        "flatten",
        "view",
        "reshape",
        "mean",
    }
)


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


class _Tracer:
    """Expected inputs of the layers of one traced graph."""

    def __init__(
        self,
        model: nn.Module,
        graph: fx.Graph,
        input_mean: Tensor | None,
        reference: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.modules = dict(model.named_modules())
        self.reference = reference or {}
        self.graph = graph
        self.input_mean = input_mean
        self.memo: dict[fx.Node, _Moments | _Skip] = {}
        self.calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                self.calls[node.target] = self.calls.get(node.target, 0) + 1

    def tensor(self, name: str, own: Tensor | None) -> Tensor | None:
        """``reference[name]`` if given, else the model's own tensor."""
        found = self.reference.get(name)
        return own.detach() if found is None and own is not None else found

    def moments(self, node) -> _Moments:
        if not isinstance(node, fx.Node):
            raise _Skip(f"input is a constant ({type(node).__name__})")
        if node not in self.memo:
            try:
                self.memo[node] = self._moments(node)
            except _Skip as skip:
                self.memo[node] = skip
        found = self.memo[node]
        if isinstance(found, _Skip):
            raise found
        return found

    def _moments(self, node: fx.Node) -> _Moments:
        if node.op == "placeholder":
            if self.input_mean is None:
                raise _Skip("no BatchNorm before input (the model input)")
            return _Moments(self.input_mean, None, "spatial", f"input {node.name}")
        if node.op == "call_module":
            return self._module(node, self.modules[node.target])
        if node.op == "call_function":
            return self._function(node)
        if node.op == "call_method":
            return self._method(node)
        raise _Skip(f"input comes from {node.op} {node.target}")

    def _module(self, node: fx.Node, mod: nn.Module) -> _Moments:
        name = node.target
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            ones = torch.ones(n, dtype=torch.float64)
            gamma = self.tensor(f"{name}.weight", mod.weight)
            beta = self.tensor(f"{name}.bias", mod.bias)
            gamma = ones if gamma is None else gamma.double().cpu()
            beta = 0 * ones if beta is None else beta.double().cpu()
            layout = "vector" if isinstance(mod, nn.BatchNorm1d) else "spatial"
            return _Moments(beta, gamma.abs(), layout, f"BatchNorm {name}")
        if not isinstance(mod, _KNOWN_MODULES):
            raise _Skip(f"input comes from {type(mod).__name__} {name}")
        src = self.moments(node.args[0])
        if isinstance(mod, _PASS_MODULES):
            return src.through(name)
        if isinstance(mod, nn.ReLU):
            return self._clip(src, name, 0.0, math.inf)
        if isinstance(mod, nn.Hardtanh):  # ReLU6 too
            return self._clip(src, name, float(mod.min_val), float(mod.max_val))
        if isinstance(mod, nn.LeakyReLU):
            return self._leaky(src, name, float(mod.negative_slope))
        if isinstance(mod, _NUMERIC_MODULES):
            return self._numeric(src, name, mod)
        if isinstance(mod, _ADAPTIVE_AVG):
            return src.through(name, std=None)
        if isinstance(mod, _AVG_POOL):
            pad = mod.padding if isinstance(mod.padding, Sequence) else (mod.padding,)
            if any(pad) and mod.count_include_pad:
                raise _Skip(f"average pooling {name} counts its zero padding")
            return src.through(name, std=None)
        if isinstance(mod, nn.Flatten):
            return self._flatten(src, name, mod.start_dim, mod.end_dim)
        raise _Skip(f"input comes from {type(mod).__name__} {name}")

    def _function(self, node: fx.Node) -> _Moments:
        fn, name = node.target, node.name
        if fn in _ADDS:
            return self._add(node)
        if fn is torch.cat:
            return self._cat(node)
        if fn not in _KNOWN_FUNCTIONS:
            raise _Skip(f"input comes from {getattr(fn, '__name__', fn)} ({name})")
        src = self.moments(node.args[0])
        if fn in _PASS_FUNCTIONS:
            return src.through(name)
        if fn in _RELU:
            return self._clip(src, name, 0.0, math.inf)
        if fn in (F.relu6,):
            return self._clip(src, name, 0.0, 6.0)
        if fn is F.hardtanh:
            return self._clip(
                src, name, _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
            )
        if fn in (torch.clamp, torch.clip):
            return self._clamp(node, src, name)
        if fn is F.leaky_relu:
            return self._leaky(src, name, _arg(node, 1, "negative_slope", 0.01))
        if fn in _NUMERIC_FUNCTIONS:
            extra, kwargs = node.args[1:], dict(node.kwargs)
            kwargs.pop("inplace", None)
            return self._numeric(src, name, lambda z: fn(z, *extra, **kwargs))
        if fn in _AVG_POOL_FUNCTIONS:
            return src.through(name, std=None)
        if fn is torch.flatten:
            return self._flatten(
                src, name, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
            )
        if fn is torch.mean:
            return self._mean(node, src, name)
        raise _Skip(f"input comes from {getattr(fn, '__name__', fn)} ({name})")

    def _method(self, node: fx.Node) -> _Moments:
        method, name = node.target, node.name
        if method not in _KNOWN_METHODS:
            raise _Skip(f"input comes from .{method}() ({name})")
        src = self.moments(node.args[0])
        if method in _PASS_METHODS:
            return src.through(name)
        if method in ("relu", "relu_"):
            return self._clip(src, name, 0.0, math.inf)
        if method in ("clamp", "clamp_", "clip", "clip_"):
            return self._clamp(node, src, name)
        if method in _NUMERIC_METHODS:
            return self._numeric(src, name, lambda z: getattr(z, method)())
        if method == "flatten":
            return self._flatten(
                src, name, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
            )
        if method in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
            return self._flatten(src, name, 1, -1)  # x.view(x.size(0), -1)
        if method == "mean":
            return self._mean(node, src, name)
        raise _Skip(f"input comes from .{method}() ({name})")

    @staticmethod
    def _gaussian(src: _Moments, name: str) -> Tensor:
        if src.std is None:
            raise _Skip(f"activation {name} after a sum, pooling or concatenation (not Gaussian)")
        return src.std

    def _clip(self, src: _Moments, name: str, low, high) -> _Moments:
        if not all(isinstance(v, (int, float)) for v in (low, high)):
            raise _Skip(f"clip bounds of {name} are not constants")
        std = self._gaussian(src, name)
        mean = normal_clip_mean(src.mean, std, float(low), float(high))
        return src.through(name, mean=mean, std=None)

    def _clamp(self, node: fx.Node, src: _Moments, name: str) -> _Moments:
        low = _arg(node, 1, "min", None)
        high = _arg(node, 2, "max", None)
        return self._clip(
            src, name, -math.inf if low is None else low, math.inf if high is None else high
        )

    def _leaky(self, src: _Moments, name: str, slope) -> _Moments:
        relu = normal_clip_mean(src.mean, self._gaussian(src, name), 0.0)
        return src.through(name, mean=relu + slope * (src.mean - relu), std=None)

    def _numeric(self, src: _Moments, name: str, fn) -> _Moments:
        mean = _numeric_mean(fn, src.mean, self._gaussian(src, name))
        return src.through(name, mean=mean, std=None)

    @staticmethod
    def _flatten(src: _Moments, name: str, start, end) -> _Moments:
        if start != 1 or end != -1:
            raise _Skip(f"{name} flattens dims {start}..{end}, not the channels onwards")
        layout = "flat" if src.layout == "spatial" else src.layout
        return src.through(name, layout=layout)

    @staticmethod
    def _mean(node: fx.Node, src: _Moments, name: str) -> _Moments:
        dims = _arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else dims
        if (
            src.layout != "spatial"
            or not dims
            or any(not isinstance(d, int) or d < 2 for d in dims)
        ):
            raise _Skip(f"{name} averages over {dims}, not over positions only")
        keep = _arg(node, 2, "keepdim", False)
        return src.through(name, std=None, layout="spatial" if keep else "vector")

    def _add(self, node: fx.Node) -> _Moments:
        if node.target is torch.add and _arg(node, 2, "alpha", 1) != 1:
            raise _Skip(f"{node.name} adds with alpha")
        parts = [a for a in node.args[:2]]
        nodes = [a for a in parts if isinstance(a, fx.Node)]
        consts = [a for a in parts if isinstance(a, (int, float))]
        if len(nodes) + len(consts) != 2:
            raise _Skip(f"{node.name} adds a tensor that is not a graph value")
        try:
            found = [self.moments(a) for a in nodes]
        except _Skip as skip:
            if str(skip).startswith("input is a residual sum"):
                raise
            raise _Skip(f"input is a residual sum ({node.name}): {skip}") from None
        if len(found) == 1:  # x + constant: still Gaussian, shifted
            return found[0].through(node.name, mean=found[0].mean + float(consts[0]))
        a, b = found
        if a.mean.shape != b.mean.shape or a.layout != b.layout:
            raise _Skip(f"input is a residual sum ({node.name}) of unlike shapes")
        path = f"({a.path}) + ({b.path})"
        return _Moments(a.mean + b.mean, None, a.layout, path)

    def _cat(self, node: fx.Node) -> _Moments:
        parts, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
        if dim != 1 or not isinstance(parts, (list, tuple)):
            raise _Skip(f"{node.name} concatenates along dim {dim}, not the channels")
        found = [self.moments(p) for p in parts]
        if len({m.layout for m in found}) != 1 or found[0].layout == "flat":
            raise _Skip(f"{node.name} concatenates unlike layouts")
        gaussian = all(m.std is not None for m in found)
        std = torch.cat([m.std for m in found]) if gaussian else None
        path = "cat(" + ", ".join(m.path for m in found) + ")"
        return _Moments(torch.cat([m.mean for m in found]), std, found[0].layout, path)


def _layer_input(layer: nn.Module, src: _Moments) -> Tensor:
    """``E[x]`` per input feature/channel of ``layer``, checked against its shape."""
    mean = src.mean
    if isinstance(layer, nn.Linear):
        n = layer.in_features
        if src.layout == "spatial":
            raise _Skip("Linear on a tensor with positions (channels are not its features)")
        if src.layout == "flat" and n % mean.numel() == 0:
            mean = mean.repeat_interleave(n // mean.numel())
    else:
        n = layer.in_channels
        if src.layout == "flat":
            raise _Skip("convolution on a flattened tensor")
    if mean.numel() != n:
        raise _Skip(f"E[x] has {mean.numel()} channels, the layer takes {n}")
    return mean


def _shift(layer: nn.Module, eps: Tensor, mean: Tensor) -> Tensor:
    """``eps . E[x]`` per output channel (float64); convolutions sum ``eps`` over
    the kernel positions of each input channel of each group."""
    if isinstance(layer, nn.Linear):
        return eps @ mean
    groups, out = layer.groups, eps.shape[0]
    per_in = eps.reshape(out, eps.shape[1], -1).sum(-1)
    per_in = per_in.reshape(groups, out // groups, -1)
    return torch.einsum("goc,gc->go", per_in, mean.reshape(groups, -1)).reshape(out)


def correct_biases(
    model: nn.Module,
    quantized: Mapping[str, Tensor],
    *,
    input_mean: Sequence[float] | Tensor | None = None,
    reference: Mapping[str, Tensor] | None = None,
) -> BiasCorrection:
    """Bias corrections for the quantized conv/linear layers of ``model``.

    ``quantized`` maps state-dict names of weights (``"features.1.conv.0.0.weight"``)
    to the dequantized weights that will replace them. For every such layer whose
    expected input is known from the BatchNorm statistics (see the module docstring),
    the returned ``updates`` hold its corrected ``bias`` (``b - eps @ E[x]``), or, for
    a layer without bias whose output goes only to a BatchNorm, that BatchNorm's
    ``running_mean + eps @ E[x]``. ``input_mean``: the per-channel mean of the
    model's input, to correct the first layer too (otherwise it is skipped).
    ``reference``: float tensors by state-dict name that stand in for the model's
    own (e.g. :func:`equalize`'s updates applied to its state dict). The
    model is not modified; a model that ``torch.fx`` cannot trace gets every layer
    skipped with the trace error.

    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 4, 1))
    >>> q = {k: v + 0.01 for k, v in net.state_dict().items() if v.ndim > 1}
    >>> fix = correct_biases(net.eval(), q)
    >>> [(row[0], row[1]) for row in fix.rows]
    [('0', 'skipped'), ('3', 'corrected')]
    >>> sd = fix.apply(net.state_dict() | q)   # load this into the model
    """
    layers = _quantized_layers(model, quantized)
    result = BiasCorrection()
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any trace failure means: structure unknown
        reason = f"model cannot be traced by torch.fx: {type(err).__name__}: {err}"
        reason = reason.splitlines()[0]
        result.rows = [(name, SKIPPED, why or reason) for name, why in layers.items()]
        return result
    mean_in = None if input_mean is None else torch.as_tensor(input_mean, dtype=torch.float64)
    tracer = _Tracer(model, graph, mean_in, reference)
    seen = set()
    for node in graph.nodes:
        if node.op == "call_module" and node.target in layers and node.target not in seen:
            seen.add(node.target)
            result.rows.append(_correct(tracer, node, quantized, result))
    for name, reason in layers.items():
        if name not in seen:
            result.rows.append((name, SKIPPED, reason or "layer is not called in the traced graph"))
    return result


def _quantized_layers(model: nn.Module, quantized: Mapping[str, Tensor]) -> dict[str, str]:
    """Module name -> "" for quantized conv/linear weights, or a reason to skip."""
    modules = dict(model.named_modules())
    out = {}
    for key in quantized:
        name, _, leaf = key.rpartition(".")
        mod = modules.get(name)
        if leaf != "weight" or mod is None:
            out[key] = "not the weight of a module"
        elif not isinstance(mod, _LAYERS):
            out[name] = f"{type(mod).__name__} is not a Linear or (non-transposed) Conv layer"
        else:
            out[name] = ""
    return out


def _correct(
    tracer: _Tracer, node: fx.Node, quantized: Mapping, result: BiasCorrection
) -> tuple[str, str, str]:
    layer_name = node.target
    layer = tracer.modules[layer_name]
    try:
        if tracer.calls[layer_name] > 1:
            raise _Skip("layer is called more than once")
        src = tracer.moments(node.args[0])
        mean = _layer_input(layer, src)
        target, value, sign, where = _output_target(tracer, node, layer)
        weight = tracer.tensor(f"{layer_name}.weight", layer.weight)
        new = torch.as_tensor(quantized[f"{layer_name}.weight"]).detach().cpu().double()
        if new.shape != weight.shape:
            raise _Skip(f"quantized weight has shape {tuple(new.shape)}, not {tuple(weight.shape)}")
        shift = _shift(layer, new - weight.cpu().double(), mean)
        fixed = value.detach().cpu().double() + sign * shift
        result.updates[target] = fixed.to(dtype=value.dtype, device=value.device)
    except _Skip as skip:
        return (layer_name, SKIPPED, str(skip))
    detail = f"{where}; max |shift| {shift.abs().max():.3g}; E[x] from {src.path}"
    return (layer_name, CORRECTED, detail)


def _output_target(tracer: _Tracer, node: fx.Node, layer: nn.Module):
    """(state-dict name, current tensor, sign of the shift, description)."""
    if layer.bias is not None:
        name = f"{node.target}.bias"
        return name, tracer.tensor(name, layer.bias), -1.0, "bias"
    users = list(node.users)
    bn = tracer.modules.get(users[0].target) if len(users) == 1 else None
    if users and users[0].op != "call_module":
        bn = None
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or users[0].args[0] is not node:
        raise _Skip("no bias, and the output does not go only to a BatchNorm")
    if bn.running_mean is None:
        raise _Skip("no bias, and the BatchNorm after it uses batch statistics")
    if tracer.calls[users[0].target] > 1:
        raise _Skip(f"no bias, and BatchNorm {users[0].target} is called more than once")
    return (
        f"{users[0].target}.running_mean",
        tracer.tensor(f"{users[0].target}.running_mean", bn.running_mean),
        1.0,
        f"running_mean of {users[0].target}",
    )
