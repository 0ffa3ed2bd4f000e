"""Mixed precision to a size budget, data-free: ``target_bpw``.

Every tensor that the plan quantizes (and that no override fixes) gets its own
bits and granularity, so that the stored size of all quantized tensors, every
byte of metadata included, stays within ``target_bpw`` bits per weight while
the summed sensitivity proxy is small.

- **Candidates**: bits 2..8 x granularity ``tensor``, ``channel``, groups of 64
  and of 32 (groups only if shorter than the row and accepted by the core for the shape);
  with a granularity other than the default (groups of 64), that one only. The
  family, the codebook and every other option of the base config are kept: the
  codebook is not a candidate because the proxy below is a squared error, which
  would favour the Lloyd-Max codebook that measurably serves models worse. Each candidate is
  quantized once (at most 28 quantizations of a tensor), the chosen one again
  at the end.
- **Cost**: ``8 * storage_bytes`` of the candidate: packed codes, codebook,
  locations and scales, exactly what a file stores.
- **Proxy**: ``sse / energy`` of the candidate, the tensor's relative squared
  error (``10 ** (-sqnr_db / 10)``). A layer's relative weight noise becomes
  about the same relative noise in its output (for inputs not aligned with the
  error), and these relative noises add up through the network, so every
  tensor weighs the same whatever its size. When a BatchNorm follows the layer
  in the state dict, each output channel's error and energy are weighed by the
  square of its gain ``|gamma| / sqrt(running_var + 1e-5)`` (PyTorch's default
  eps, which state dicts do not hold): the scale at which that channel reaches
  the next layer. Measured on MobileNetV2 (``benches/eval_models.py``), this did
  at least as well as the same without BatchNorm weighing, the last layer weighed 2x or 4x,
  tensors weighed by the square root of their size, and input channels weighed
  by the BatchNorm before the layer (figures in the README).
- **Allocation**: start from each tensor's cheapest candidate; take upgrades
  along each tensor's lower convex hull of (cost, proxy), the best proxy
  decrease per bit first, while they fit (a Lagrangian sweep); then, while
  bits remain, the single switch of one tensor that lowers the summed proxy
  most and still fits. Then exchanges, up to ``EXCHANGE_ROUNDS`` times: one
  tensor up to one of its next ``EXCHANGE_STEPS`` hull points, the others
  down along their hulls until the budget holds, kept when the summed proxy
  falls (followed by the fill again).
- **Budget**: ``sum(cost) <= floor(target_bpw * n)`` in integers, over all
  quantized tensors (``n`` weights; overrides count at their fixed cost).

A BatchNorm "follows" the weight ``X.weight`` (2+ dimensions, ``r`` rows) when
the next module in state-dict order, ``Y``, has ``Y.weight``, ``Y.bias``,
``Y.running_mean`` and ``Y.running_var`` of shape ``(r,)``: the order PyTorch
gives a ``Conv2d`` then a ``BatchNorm2d`` in a ``Sequential`` or among a
module's attributes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from . import _arrays
from ._format import DTYPES
from ._options import DEFAULT_GROUP_SIZE, QuantConfig
from ._report import Report
from ._tensor import QuantizedTensor, matrix_shape, quantize_with

#: Candidate widths and granularities (``None``: per tensor/channel).
BITS = tuple(range(2, 9))
LAYOUTS: tuple[tuple[str, int | None], ...] = (
    ("tensor", None),
    ("channel", None),
    ("group", 64),
    ("group", 32),
)
#: Rounds of exchanges after the sweep, and hull points tried upwards per tensor.
EXCHANGE_ROUNDS = 8
EXCHANGE_STEPS = 3
#: BatchNorm's eps, PyTorch's default (not stored in state dicts).
BN_EPS = 1e-5


@dataclass(frozen=True)
class Choice:
    """One candidate of one tensor: its options, stored bits and proxy."""

    config: QuantConfig
    cost: int  # stored bits, all metadata included
    proxy: float

    @property
    def label(self) -> str:
        """Short text for reports, e.g. ``"4b g64"``, ``"3b channel"``."""
        c = self.config
        layout = f"g{c.group_size}" if c.group_size else c.granularity
        return f"{c.bits}b {layout}"


def restricts(base: QuantConfig) -> bool:
    """Whether the user's granularity restricts the candidates: anything but the
    default, groups of ``DEFAULT_GROUP_SIZE``."""
    return (base.granularity, base.group_size) != ("group", DEFAULT_GROUP_SIZE)


def candidate_configs(
    base: QuantConfig, shape: tuple[int, ...], restrict: bool
) -> list[QuantConfig]:
    """The options tried for a tensor of ``shape``: groups only when shorter than
    the row (a group as long as the row is a channel)."""
    cols = matrix_shape(shape)[1]
    layouts = [(base.granularity, base.group_size)] if restrict else LAYOUTS
    out = []
    for granularity, group in layouts:
        if group is not None and group >= cols and not restrict:
            continue
        layout = base.replace(granularity=granularity, group_size=group)
        out.extend(layout.replace(bits=bits) for bits in BITS)
    return out


def bn_gains(
    shapes: Mapping[str, tuple[int, ...]], load: Callable[[str], np.ndarray]
) -> dict[str, np.ndarray]:
    """``{weight name: per-row BatchNorm gain}`` for weights followed by a BatchNorm
    (see the module docstring); ``load`` gives a 1-D float32 array."""
    names = list(shapes)
    out = {}
    for i, name in enumerate(names):
        prefix, _, leaf = name.rpartition(".")
        if leaf != "weight" or len(shapes[name]) < 2:
            continue
        rest = [n for n in names[i + 1 :] if not n.startswith(prefix + ".")]
        bn = rest[0].rpartition(".")[0] if rest else None
        rows = shapes[name][0]
        keys = [f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        if bn is None or any(shapes.get(k) != (rows,) for k in keys):
            continue
        gamma, var = load(keys[0]), load(keys[3])
        out[name] = np.abs(gamma.astype(np.float64)) / np.sqrt(var.astype(np.float64) + BN_EPS)
    return out


def proxy(q: QuantizedTensor, original: np.ndarray | None, gains: np.ndarray | None) -> float:
    """Relative squared error of ``q``, per-row weighed by ``gains`` when given
    (``original``: the float32 weights as a rows x cols matrix)."""
    if gains is None or original is None:
        return q.sse / q.energy if q.energy > 0 else 0.0
    decoded = np.asarray(_decoded(q), dtype=np.float64).reshape(original.shape)
    w = original.astype(np.float64)
    g2 = gains**2
    energy = float(g2 @ np.sum(w * w, axis=1))
    sse = float(g2 @ np.sum((w - decoded) ** 2, axis=1))
    return sse / energy if energy > 0 else 0.0


def _decoded(q: QuantizedTensor) -> np.ndarray:
    """The decoded values as float32 NumPy, whatever the original dtype (NumPy has
    no bfloat16 to restore checkpoint tensors to)."""
    return replace(q, dtype="float32", torch=False).dequantize()


def choices_of(
    name: str,
    configs: list[QuantConfig],
    quantize: Callable[[str, QuantConfig], QuantizedTensor],
    original: np.ndarray | None,
    gains: np.ndarray | None,
) -> list[Choice]:
    """Every candidate of one tensor, quantized, with its exact cost and proxy.
    A group size that the core refuses for this shape is left out."""
    out, refused = [], None
    for config in configs:
        try:
            q = quantize(name, config)
        except ValueError as e:
            if config.granularity != "group":
                raise
            refused = e
            continue
        out.append(Choice(config, 8 * q.storage_bytes, proxy(q, original, gains)))
    if not out and refused is not None:
        raise refused
    return out


def allocate(
    options: Mapping[str, list[Choice]], numel: int, fixed_cost: int, target_bpw: float
) -> dict[str, Choice]:
    """One choice per tensor with ``fixed_cost + sum(cost) <= floor(target_bpw * numel)``
    and a small summed proxy; ``numel`` counts every quantized weight."""
    limit = math.floor(Fraction(target_bpw) * numel) - fixed_cost
    chosen = {name: min(opts, key=lambda c: (c.cost, c.proxy)) for name, opts in options.items()}
    floor_cost = sum(c.cost for c in chosen.values())
    if floor_cost > limit:
        cheapest = (floor_cost + fixed_cost) / numel
        raise ValueError(
            f"target_bpw={target_bpw} is below the cheapest choice, {cheapest:.4f} bits per "
            f"weight (every tensor at its smallest candidate: {_cheapest_text(chosen)})"
        )
    hulls = {name: _hull(opts) for name, opts in options.items()}
    spare = _hull_sweep(hulls, chosen, limit - floor_cost)
    _fill(options, chosen, spare)
    for _ in range(EXCHANGE_ROUNDS):
        better = _exchange(hulls, chosen, limit)
        if better is None:
            break
        chosen = better
        _fill(options, chosen, limit - sum(c.cost for c in chosen.values()))
    return chosen


def _cheapest_text(chosen: Mapping[str, Choice]) -> str:
    labels = sorted({c.label for c in chosen.values()})
    return ", ".join(labels[:4]) + (", ..." if len(labels) > 4 else "")


def _hull(opts: list[Choice]) -> list[Choice]:
    """The lower convex hull of (cost, proxy), cheapest first."""
    hull: list[Choice] = []
    for c in sorted(opts, key=lambda c: (c.cost, c.proxy)):
        if hull and c.proxy >= hull[-1].proxy:
            continue
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], c) <= 0:
            hull.pop()
        hull.append(c)
    return hull


def _cross(a: Choice, b: Choice, c: Choice) -> float:
    """> 0 when b lies strictly below the segment from a to c."""
    return (b.cost - a.cost) * (c.proxy - a.proxy) - (b.proxy - a.proxy) * (c.cost - a.cost)


def _hull_sweep(options: Mapping[str, list[Choice]], chosen: dict[str, Choice], spare: int) -> int:
    """Upgrades along the hulls, best proxy decrease per bit first, while they fit."""
    hulls = {name: _hull(opts) for name, opts in options.items()}
    steps: list[tuple[float, str, int]] = []

    def push(name: str, i: int) -> None:
        hull = hulls[name]
        if i + 1 < len(hull):
            a, b = hull[i], hull[i + 1]
            heapq.heappush(steps, (-(a.proxy - b.proxy) / (b.cost - a.cost), name, i + 1))

    for name, hull in hulls.items():
        chosen[name] = hull[0]
        push(name, 0)
    while steps:
        _, name, i = heapq.heappop(steps)
        extra = hulls[name][i].cost - chosen[name].cost
        if extra <= spare:
            spare -= extra
            chosen[name] = hulls[name][i]
            push(name, i)
    return spare


def _fill(options: Mapping[str, list[Choice]], chosen: dict[str, Choice], spare: int) -> None:
    """While bits remain: the one switch that fits and lowers the proxy sum most."""
    while True:
        best: tuple[float, str, Choice] | None = None
        for name, opts in options.items():
            current = chosen[name]
            for c in opts:
                gain = current.proxy - c.proxy
                if gain > 0 and c.cost - current.cost <= spare and (best is None or gain > best[0]):
                    best = (gain, name, c)
        if best is None:
            return
        _, name, c = best
        spare -= c.cost - chosen[name].cost
        chosen[name] = c


def _exchange(
    hulls: Mapping[str, list[Choice]], chosen: dict[str, Choice], limit: int
) -> dict[str, Choice] | None:
    """The best of: one tensor up to one of its next hull points, the others down
    along their hulls (least proxy increase per bit freed first) until the budget
    holds; None when no such exchange lowers the summed proxy. This is what the
    sweep misses when a large tensor's next step does not fit in what is left
    after many small ones took their cheap steps."""
    best, best_total = None, sum(c.proxy for c in chosen.values())
    for name, hull in hulls.items():
        ups = [c for c in hull if c.proxy < chosen[name].proxy][:EXCHANGE_STEPS]
        for c in ups:
            trial = _repair(hulls, chosen | {name: c}, limit, name)
            total = math.inf if trial is None else sum(t.proxy for t in trial.values())
            if total < best_total * (1 - 1e-12):
                best, best_total = trial, total
    return best


def _repair(
    hulls: Mapping[str, list[Choice]], trial: dict[str, Choice], limit: int, keep: str
) -> dict[str, Choice] | None:
    """``trial`` with tensors other than ``keep`` stepped down their hulls until its
    cost fits ``limit``; None if it cannot."""
    excess = sum(c.cost for c in trial.values()) - limit
    while excess > 0:
        best = None
        for name, hull in hulls.items():
            current = trial[name]
            down = [c for c in hull if c.cost < current.cost]
            if name == keep or not down:
                continue
            c = down[-1]
            rate = (c.proxy - current.proxy) / (current.cost - c.cost)
            if best is None or rate < best[0]:
                best = (rate, name, c)
        if best is None:
            return None
        _, name, c = best
        excess -= trial[name].cost - c.cost
        trial[name] = c
    return trial


def plan_to_budget(
    shapes: Mapping[str, tuple[int, ...]],
    plan: Mapping[str, QuantConfig],
    fixed: set[str] | frozenset[str],
    base: QuantConfig,
    target_bpw: float,
    restrict: bool,
    quantize: Callable[[str, QuantConfig], QuantizedTensor],
    load: Callable[[str], np.ndarray],
    release: Callable[[str], None] | None = None,
) -> dict[str, Choice]:
    """The budget's choice for every tensor of ``plan`` not in ``fixed``.

    ``shapes``: every tensor of the state dict in order (for the BatchNorm
    pattern); ``quantize(name, config)``; ``load(name)``: float32 NumPy values;
    ``release(name)`` once a tensor is done with. Fixed tensors (overrides) are
    quantized once to count their exact cost."""
    gains = bn_gains(shapes, load)
    fixed_cost = sum(8 * quantize(n, plan[n]).storage_bytes for n in plan if n in fixed)
    numel = sum(math.prod(shapes[n]) for n in plan)
    options = {}
    for name in plan:
        if name in fixed:
            continue
        rows, cols = matrix_shape(shapes[name])
        g = gains.get(name)
        original = load(name).reshape(rows, cols) if g is not None else None
        configs = candidate_configs(base, shapes[name], restrict)
        options[name] = choices_of(name, configs, quantize, original, g)
        if release is not None:
            release(name)
    if not options:
        return {}
    return allocate(options, numel, fixed_cost, target_bpw)


@dataclass(frozen=True)
class Source:
    """Where the budget reads tensors: ``shapes`` of every tensor in state-dict
    order (for the BatchNorm pattern), ``quantize(name, config)``, ``load(name)``
    (float32 NumPy), ``release(name)`` once a tensor is done with, and the
    ``suffix`` that turns a planned name into a tensor name (``".weight"`` for
    modules)."""

    shapes: Mapping[str, tuple[int, ...]]
    quantize: Callable[[str, QuantConfig], QuantizedTensor]
    load: Callable[[str], np.ndarray]
    release: Callable[[str], None] | None = None
    suffix: str = ""


def state_dict_source(state_dict: Mapping[str, Any]) -> Source:
    """An in-memory state dict (torch or NumPy values)."""
    return Source(
        {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()},
        lambda name, config: quantize_with(state_dict[name], config, name),
        lambda name: to_float32(state_dict[name]),
    )


def model_source(model: Any) -> Source:
    """The weights of a torch model's modules, read from its state dict (where
    the BatchNorms are found); planned names are module names."""
    return replace(state_dict_source(model.state_dict()), suffix=".weight")


def checkpoint_source(checkpoint: Any) -> Source:
    """A checkpoint on disk (``nuq_rs._checkpoint``): one tensor in memory at a
    time, its pages released once its candidates are done. The streaming path
    quantizes through it too."""
    specs = checkpoint.specs
    return Source(
        {name: shape for name, (_, shape) in specs.items()},
        lambda name, config: quantize_with(_stored(checkpoint, name), config, name),
        lambda name: _widen(checkpoint.array(name), specs[name][0]),
        checkpoint.release,
    )


def _stored(checkpoint: Any, name: str) -> _arrays.Flat:
    """A floating tensor of a checkpoint, flat and ready for the core."""
    code = checkpoint.specs[name][0]
    return _arrays.flatten_stored(checkpoint.array(name), DTYPES[code][0])


def choose(
    source: Source,
    plan: Mapping[str, QuantConfig],
    fixed: set[str],
    base: QuantConfig,
    target_bpw: float,
) -> dict[str, Choice]:
    """:func:`plan_to_budget` over ``source``, by the planner's names; a
    granularity other than the default restricts the candidates."""
    suffix = source.suffix
    choices = plan_to_budget(
        source.shapes,
        {name + suffix: config for name, config in plan.items()},
        {name + suffix for name in fixed},
        base,
        target_bpw,
        restricts(base),
        source.quantize,
        source.load,
        source.release,
    )
    return {name.removesuffix(suffix): c for name, c in choices.items()}


def to_float32(x: Any) -> np.ndarray:
    """A torch tensor or NumPy array as a float32 NumPy array (CPU)."""
    if _arrays.is_torch_tensor(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _widen(array: np.ndarray, code: str) -> np.ndarray:
    """A checkpoint array as float32 (BF16 arrives as its uint16 bits)."""
    if code == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def with_choices(report: Report, choices: Mapping[str, Choice]) -> Report:
    """``report`` with each chosen tensor's ``choice`` and ``proxy`` filled in."""
    rows = []
    for t in report.tensors:
        c = choices.get(t.name)
        rows.append(t if c is None else replace(t, choice=c.label, proxy=c.proxy))
    return Report(tuple(rows))
