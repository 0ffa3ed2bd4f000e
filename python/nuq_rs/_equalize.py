"""Channel equalization through BatchNorm: an exact change of the float weights
that makes per-tensor and flattened-block quantization see even channel ranges.

A conv/linear layer whose output goes only to a BatchNorm can have each output
channel ``c`` multiplied by any ``s_c > 0``: the BatchNorm absorbs it exactly when
its ``running_mean`` is multiplied by ``s_c`` and its ``running_var`` becomes
``s_c^2 (running_var + eps) - eps`` (then ``sqrt(var' + eps) = s_c sqrt(var + eps)``),
and a bias, if any, is multiplied by ``s_c``. :func:`equalize` picks ``s_c`` so that
every channel's largest weight equals the tensor's largest (``s_c >= 1``, so the
new variance stays positive). The fp32 model in eval mode computes the same
function, to rounding; per-channel quantizers are unaffected (they are scale
invariant per row), while per-tensor and flattened-block quantizers (NF4 blocks of
64 over a depthwise kernel, the paper's ``granularity="tensor"``) no longer spend
their range on one channel's largest weights.

This is not the cross-layer equalization of Nagel et al. 2019 (which moves scale
between consecutive layers through a positively homogeneous activation, and so
needs ReLU6 replaced by ReLU): it needs no property of the activation and keeps
the model's function exactly. Under BatchNorm in training mode (batch statistics)
it is exact up to the BatchNorm's ``eps``.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU6()).eval()
>>> eq = equalize(net)
>>> sorted(eq.updates)
['0.weight', '1.running_mean', '1.running_var']
>>> net.load_state_dict(eq.apply(net.state_dict()))  # or on a copy of the model
<All keys matched successfully>
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

__all__ = ["Equalization", "equalize"]

EQUALIZED = "equalized"
SKIPPED = "skipped"
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DEAD = 1e-6  # channels whose largest weight is below this fraction of the tensor's stay


@dataclass
class Equalization:
    """What :func:`equalize` changed.

    ``updates``: state-dict name -> new float tensor (layer weights and biases,
    BatchNorm running statistics). ``rows``: ``(layer, status, detail)`` for every
    conv/linear layer; ``scales``: layer -> per-channel factors applied.
    """

    updates: dict[str, Tensor] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    scales: dict[str, Tensor] = field(default_factory=dict)

    def apply(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A copy of ``state_dict`` with the updates in it."""
        out = dict(state_dict)
        out.update(self.updates)
        return out


def equalize(model: nn.Module) -> Equalization:
    """Equalize the output-channel ranges of every conv/linear layer whose output
    goes only to a BatchNorm (see the module docstring). The model is not modified:
    load ``result.apply(model.state_dict())`` into it or into a copy. Layers in a
    model that ``torch.fx`` cannot trace are all skipped with the trace error.
    """
    result = Equalization()
    modules = dict(model.named_modules())
    layers = [name for name, mod in modules.items() if isinstance(mod, _LAYERS)]
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any trace failure means: structure unknown
        reason = f"model cannot be traced by torch.fx: {type(err).__name__}: {err}"
        result.rows = [(name, SKIPPED, reason.splitlines()[0]) for name in layers]
        return result
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    seen = set()
    for node in graph.nodes:
        if node.op == "call_module" and node.target in layers and node.target not in seen:
            seen.add(node.target)
            reason = _follower(node, modules, calls)
            if reason is None:
                bn = next(iter(node.users)).target
                result.rows.append(_equalize_pair(result, node.target, modules, bn))
            else:
                result.rows.append((node.target, SKIPPED, reason))
    for name in layers:
        if name not in seen:
            result.rows.append((name, SKIPPED, "layer is not called in the traced graph"))
    return result


def _follower(node: fx.Node, modules: dict[str, nn.Module], calls: dict[str, int]) -> str | None:
    """None if ``node``'s output goes only to a BatchNorm with running statistics
    that sees nothing else; otherwise why not."""
    if calls[node.target] > 1:
        return "layer is called more than once"
    users = list(node.users)
    bn = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or users[0].args[0] is not node:
        return "the output does not go only to a BatchNorm"
    if calls[users[0].target] > 1:
        return f"BatchNorm {users[0].target} is called more than once"
    if bn.running_var is None:
        return f"BatchNorm {users[0].target} uses batch statistics"
    return None


def _equalize_pair(
    result: Equalization, name: str, modules: dict[str, nn.Module], bn_name: str
) -> tuple[str, str, str]:
    layer, bn = modules[name], modules[bn_name]
    weight = layer.weight.detach()
    w = weight.cpu().double()
    amax = w.abs().flatten(1).amax(1)
    top = amax.max()
    scale = torch.where(amax > top * _DEAD, top / amax.clamp_min(1e-300), torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.ndim - 1)
    eps = float(bn.eps)

    def put(key: str, like: Tensor, value: Tensor) -> None:
        result.updates[key] = value.to(dtype=like.dtype, device=like.device)

    put(f"{name}.weight", weight, w * scale.reshape(shape))
    if layer.bias is not None:
        put(f"{name}.bias", layer.bias, layer.bias.detach().cpu().double() * scale)
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    put(f"{bn_name}.running_mean", mean, mean.cpu().double() * scale)
    put(f"{bn_name}.running_var", var, scale**2 * (var.cpu().double() + eps) - eps)
    result.scales[name] = scale
    detail = f"into BatchNorm {bn_name}; channel scales {scale.min():.3g}..{scale.max():.3g}"
    return (name, EQUALIZED, detail)
