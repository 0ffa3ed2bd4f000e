"""Packed weights inside a model, in place: :func:`quantize_` and :func:`load_into`.

Only weight parameters change: each becomes an ``nn.Parameter`` holding a
:class:`nuq_rs.PackedWeight`, so the model keeps its own modules and ``forward``
(subclasses with their own padding, modules that read a child's weight, tied
weights). The weights taken:

- ``weight`` of ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Embedding``;
- ``in_proj_weight`` (or ``q/k/v_proj_weight``) of ``nn.MultiheadAttention``, whose
  ``out_proj`` is a ``Linear``;
- ``weight`` of a module whose class is named ``Conv1D`` (Hugging Face's transposed
  linear: ``weight`` is ``(in, out)`` and ``forward`` is ``addmm(bias, x, weight)``),
  packed as its transpose so that this ``addmm`` runs the LUT matmul.

A weight shared by several modules (tied embeddings) is quantized once, under
the first name ``model.named_modules()`` gives it, and stays shared. Planning,
``target_bpw`` and bias correction are those of :func:`nuq_rs.nn.quantize_model`
(one code path, :func:`prepare`), so the two give the same decoded weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._budget import Source, to_float32
from ._options import QuantConfig, check_activations
from ._packed import PackedWeight
from ._plan import Plan, Scope, Spec, plan
from ._report import Report, report_row
from ._tensor import QuantizedTensor, quantize_with

__all__ = ["load_into", "quantize_"]

#: Modules whose ``weight`` is packed as it is.
KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
WEIGHTS = Scope("quantizable module", "the model")

#: ``modules=``: module names, or ``(module, name) -> bool``.
ModuleFilter = Collection[str] | Callable[[nn.Module, str], bool] | None


@dataclass
class Target:
    """One weight to quantize: ``module.attr`` (state-dict name ``key``), planned
    as ``name`` (the module name for ``weight``, else ``key``), and every
    ``(module, attr)`` that holds the same parameter."""

    name: str
    key: str
    module: nn.Module
    attr: str
    transposed: bool = False
    places: list[tuple[nn.Module, str]] = field(default_factory=list)

    @property
    def tensor(self) -> torch.Tensor:
        """The weight as it is quantized (transposed back for ``Conv1D``)."""
        w = getattr(self.module, self.attr).detach()
        return w.t() if self.transposed else w


def weight_attrs(module: nn.Module, legacy: bool = False) -> list[tuple[str, bool]]:
    """``(attribute, transposed)`` of the weights of ``module`` to take
    (``legacy``: only what :func:`nuq_rs.nn.quantize_model` swaps)."""
    if legacy:
        return [("weight", False)] if isinstance(module, nn.Linear | nn.Conv2d) else []
    if isinstance(module, nn.MultiheadAttention):
        return [(a, False) for a in MHA_WEIGHTS if getattr(module, a, None) is not None]
    if isinstance(module, KINDS):
        return [("weight", False)]
    w = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.ndim == 2:
        return [("weight", True)]
    return []


def find_targets(
    model: nn.Module, modules: ModuleFilter = None, *, legacy: bool = False, strict: bool = True
) -> dict[str, Target]:
    """The weights of ``model`` to quantize, by planned name. ``strict``: a
    weight that is not floating or already packed raises ``ValueError``."""
    where: dict[int, list[tuple[nn.Module, str]]] = {}
    for key, p in model.named_parameters(remove_duplicate=False):
        owner, _, attr = key.rpartition(".")
        where.setdefault(id(p), []).append((model.get_submodule(owner), attr))
    named = list(model.named_modules())
    wanted = _chosen(named, modules, legacy)
    targets: dict[str, Target] = {}
    seen: set[int] = set()
    for name, module in named:
        for attr, transposed in weight_attrs(module, legacy) if name in wanted else ():
            w = getattr(module, attr)
            if id(w) in seen and not legacy:
                continue
            seen.add(id(w))
            key = f"{name}.{attr}" if name else attr
            if strict:
                _check_weight(key, w)
            planned = name if attr == "weight" else key
            places = where.get(id(w), [(module, attr)])
            targets[planned] = Target(planned, key, module, attr, transposed, places)
    return targets


def _chosen(named: list[tuple[str, nn.Module]], modules: ModuleFilter, legacy: bool) -> set[str]:
    takeable = {n: m for n, m in named if weight_attrs(m, legacy)}
    if modules is None:
        return set(takeable)
    if callable(modules):
        return {n for n, m in takeable.items() if modules(m, n)}
    if isinstance(modules, str):
        raise TypeError("modules must be a collection of module names or a callable, not a str")
    unknown = sorted(set(modules) - set(takeable))
    if unknown:
        raise ValueError(f"modules name no quantizable module of the model: {unknown}")
    return set(modules)


def _check_weight(key: str, w: Any) -> None:
    module = key.rpartition(".")[0] or "(the model)"
    if isinstance(w, PackedWeight):
        raise ValueError(f"module {module!r}: {key!r} is already quantized (a PackedWeight)")
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        dtype = getattr(w, "dtype", type(w).__name__)
        raise ValueError(f"module {module!r}: {key!r} is {dtype}, not a floating-point weight")


def _source(model: nn.Module, targets: Mapping[str, Target]) -> Source:
    """The model's tensors for the budget, in state-dict order, each target's
    under ``name + ".weight"`` (the planner's names) and in its quantized orientation."""
    state = model.state_dict()
    key_of = {t.name + ".weight": t.key for t in targets.values()}
    target_of = {t.key: t for t in targets.values()}
    renamed = {t.key: t.name + ".weight" for t in targets.values()}
    shapes = {
        renamed.get(k, k): tuple(target_of[k].tensor.shape if k in target_of else v.shape)
        for k, v in state.items()
    }

    def tensor(name: str) -> Any:
        key = key_of.get(name, name)
        return target_of[key].tensor if key in target_of else state[key]

    return Source(
        shapes,
        lambda name, config: quantize_with(tensor(name), config, key_of.get(name, name)),
        lambda name: to_float32(tensor(name)),
        suffix=".weight",
    )


@dataclass
class Prepared:
    """What :func:`prepare` decided and computed; nothing of the model changed yet."""

    targets: dict[str, Target]
    plan: Plan
    quantized: dict[str, QuantizedTensor]
    correction: Any = None

    def report(self) -> Report:
        rows = []
        for name, q in self.quantized.items():
            rows.append(report_row(self.targets[name].key, q, self.plan.choices.get(name)))
        return Report(tuple(rows))

    def decoded(self, name: str) -> torch.Tensor:
        """A quantized weight decoded, in the model's orientation."""
        w = torch.as_tensor(self.quantized[name].dequantize())
        return w.t() if self.targets[name].transposed else w


def prepare(
    model: nn.Module,
    targets: dict[str, Target],
    base: QuantConfig,
    *,
    overrides: Mapping[str, Any] | None = None,
    exclude: Collection[str] | None = None,
    target_bpw: float | None = None,
    bias_correction: bool = True,
    scope: Scope = WEIGHTS,
) -> Prepared:
    """Plan, quantize and (``bias_correction``) compute the bias corrections of
    ``targets`` against the float ``model``, which is left as it is."""
    specs = {
        n: Spec(tuple(t.tensor.shape), t.tensor.is_floating_point()) for n, t in targets.items()
    }
    decided = plan(
        specs,
        base,
        overrides,
        list(exclude) if exclude is not None else None,
        target_bpw=target_bpw,
        source=_source(model, targets),
        scope=scope,
    )
    quantized = {
        name: quantize_with(targets[name].tensor, config, targets[name].key)
        for name, config in decided.configs.items()
    }
    prepared = Prepared(targets, decided, quantized)
    if bias_correction:
        from ._bias import correct_biases

        decoded = {targets[n].key: prepared.decoded(n) for n in quantized}
        prepared.correction = correct_biases(model, decoded)
    return prepared


def apply_correction(model: nn.Module, correction: Any) -> None:
    """Copy the corrected biases / running means into ``model``."""
    if correction is None:
        return
    with torch.no_grad():
        for key, value in correction.updates.items():
            owner, _, attr = key.rpartition(".")
            getattr(model.get_submodule(owner), attr).copy_(value)
    model.nuq_bias_correction = correction


def quantize_(
    model: nn.Module,
    bits: int = 4,
    *,
    modules: ModuleFilter = None,
    granularity: str = "group",
    group_size: int | None = None,
    family: str = "auto",
    codebook: str = "fitted",
    overrides: Mapping[str, Any] | None = None,
    exclude: list[str] | tuple[str, ...] | None = None,
    target_bpw: float | None = None,
    bias_correction: bool = True,
    activations: str = "fp32",
) -> Report:
    """Quantize the weights of ``model`` in place into packed weights whose
    ``F.linear`` / ``F.conv1d`` / ``F.conv2d`` / ``F.embedding`` run on the codes
    (see :class:`nuq_rs.PackedWeight`); returns the report.

    Takes the weights of ``Linear``, ``Conv1d``, ``Conv2d``, ``Embedding``,
    ``MultiheadAttention`` and Hugging Face ``Conv1D`` modules, subclasses
    included; the model keeps its modules and their ``forward``. ``modules``
    picks them: module names, or a callable ``(module, name) -> bool``.
    ``overrides`` and ``exclude`` take the same names as in
    :func:`nuq_rs.nn.quantize_model` (module names; ``"attn.in_proj_weight"``
    for a weight not called ``weight``), and ``target_bpw``, ``bias_correction``
    (on by default; ``model.nuq_bias_correction`` says per layer what was done)
    and ``activations`` work as there: the same options give the same decoded
    weights and biases. Tied weights are quantized once and stay tied. A weight
    that is not floating point, or already packed, raises ``ValueError`` naming
    it, before anything changes.

    >>> import torch, nuq_rs
    >>> net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(),
    ...                           torch.nn.Linear(32, 4))
    >>> report = nuq_rs.quantize_(net, bits=4, modules=["0"])
    >>> type(net[0].weight).__name__, type(net[2].weight).__name__
    ('PackedWeight', 'Parameter')
    >>> with torch.inference_mode():
    ...     net(torch.randn(2, 32)).shape
    torch.Size([2, 4])
    """
    check_activations(activations)
    base = QuantConfig(bits, granularity, group_size, family, codebook)
    targets = find_targets(model, modules)
    prepared = prepare(
        model,
        targets,
        base,
        overrides=overrides,
        exclude=exclude,
        target_bpw=target_bpw,
        bias_correction=bias_correction,
    )
    int8 = activations == "int8"
    for name, q in prepared.quantized.items():
        t = targets[name]
        w = PackedWeight.from_quantized(q, transposed=t.transposed, int8=int8)
        _place(t.places, nn.Parameter(w, requires_grad=False))
    apply_correction(model, prepared.correction)
    return prepared.report()


def _place(places: list[tuple[nn.Module, str]], value: torch.Tensor) -> None:
    for module, attr in places:
        setattr(module, attr, value)


def load_into(model: nn.Module, path: str | os.PathLike[str], *, verify: bool = True) -> None:
    """Load a file written by :meth:`nuq_rs.QuantizedStateDict.save` into ``model``:
    each quantized tensor becomes a :class:`nuq_rs.PackedWeight` built from the
    memory-mapped file without decoding, each kept tensor is loaded as it is.

    Every tensor of the model's ``state_dict()`` must be in the file, with its
    shape, and nothing else; otherwise a ``ValueError`` names the missing, extra
    and mismatched tensors and the model is left untouched (everything is read
    and checked first). Tensors are assigned, not copied, so a model built on
    the ``meta`` device (no memory for its float weights) works:
    peak memory stays near the packed size. ``verify``: check each tensor's
    CRC32C (see :func:`nuq_rs.load`).

    >>> import torch, nuq_rs, tempfile, os
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    >>> path = os.path.join(tempfile.mkdtemp(), "net.nuq.safetensors")
    >>> nuq_rs.quantize_state_dict(net.state_dict(), bits=4).save(path)
    >>> with torch.device("meta"):
    ...     fresh = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    >>> nuq_rs.load_into(fresh, path)
    >>> type(fresh[0].weight).__name__, fresh[0].bias.device.type
    ('PackedWeight', 'cpu')
    """
    from ._loaded import load

    loaded = load(path, verify=verify)
    current = model.state_dict(keep_vars=True)
    staged = _stage(loaded, current)
    holders = _holders(model)
    done: set[int] = set()
    for key, value in staged.items():
        old = current[key]
        if id(old) in done:
            continue
        done.add(id(old))
        if isinstance(old, nn.Parameter):
            grad = old.requires_grad and not isinstance(value, PackedWeight)
            value = nn.Parameter(value, requires_grad=grad)
        _place(holders.get(id(old), [_owner(model, key)]), value)


def _stage(loaded: Any, current: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of the file, checked against the model's, ready to assign."""
    missing = [k for k in current if k not in loaded]
    extra = [k for k in loaded if k not in current]
    staged, wrong = {}, []
    for key in (k for k in loaded if k in current):
        want = current[key]
        value = loaded[key]
        if isinstance(value, QuantizedTensor):
            value = PackedWeight.from_quantized(_owned(value))
            loaded.release(key)
        elif isinstance(want, PackedWeight):
            value = value.clone()
        else:
            value = value.to(want.dtype)
        if tuple(value.shape) != tuple(want.shape):
            wrong.append(f"{key}: file {list(value.shape)}, model {list(want.shape)}")
        staged[key] = value
    if missing or extra or wrong:
        raise ValueError(
            f"{loaded.path} does not match the model (nothing was loaded): "
            f"missing {missing}, unexpected {extra}, shape mismatch {wrong}"
        )
    return staged


def _owned(q: QuantizedTensor) -> QuantizedTensor:
    """``q`` with its arrays copied out of the read-only mapping."""
    from dataclasses import replace

    arrays = {p: getattr(q, p).copy() for p in ("packed", "levels", "loc", "scale")}
    return replace(q, **arrays)


def _holders(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """``id(tensor)`` -> every ``(module, attr)`` holding it (tied weights)."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules(remove_duplicate=False):
        for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
            if t is not None:
                out.setdefault(id(t), []).append((module, attr))
    for places in out.values():  # the same module reached twice
        places[:] = list({(id(m), a): (m, a) for m, a in places}.values())
    return out


def _owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    owner, _, attr = key.rpartition(".")
    return model.get_submodule(owner), attr
