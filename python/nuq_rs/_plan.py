"""What to quantize and with which options: the one planner behind
:func:`nuq_rs.quantize_state_dict`, ``nuq-rs quantize`` on files and
:func:`nuq_rs.quantize_` / :func:`nuq_rs.nn.quantize_model`.

Each path describes its named things as :class:`Spec` (shape, floating or not):
the tensors of a state dict or a checkpoint, or the weights of a model's
modules by module name (``nuq_rs._model.find_targets``). Then, in this order:

| a tensor that is | gets |
|---|---|
| named by ``overrides`` (it must be floating) | ``base`` changed by the override |
| floating, 2+ dimensions, its name matched by no ``exclude`` pattern | ``base`` |
| anything else (biases, norms, integer buffers, excluded names) | kept as it is |
| empty (a dimension of 0), whatever the rules above say | kept as it is |
| planned, with ``target_bpw``, and not named by ``overrides`` | the budget's choice |

The budget (``nuq_rs._budget``) chooses bits and granularity per tensor.

Groups need no fit: a row that the group size does not divide ends in a shorter
group. An override or exclude pattern that names nothing, and every bad option,
raise ``ValueError`` (``TypeError`` for a wrong type) before any tensor is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._budget import Choice, Source, choose
from ._options import QuantConfig, check_target_bpw, overridden

#: An override: bits, or a dict of options of :class:`QuantConfig`.
Override = int | Mapping[str, Any]


@dataclass(frozen=True)
class Spec:
    """What the planner knows of one named tensor: its shape and whether it is floating."""

    shape: tuple[int, ...]
    floating: bool


@dataclass(frozen=True)
class Scope:
    """How errors name what is planned: a ``noun`` of a ``place``."""

    noun: str
    place: str


STATE_DICT = Scope("tensor", "the state dict")
CHECKPOINT = Scope("tensor", "the checkpoint")
MODEL = Scope("Linear/Conv2d module", "the model")


@dataclass(frozen=True)
class Plan:
    """The options of every tensor to quantize, in input order, and with
    ``target_bpw`` the budget's choice for each tensor it chose."""

    configs: dict[str, QuantConfig]
    choices: dict[str, Choice] = field(default_factory=dict)


def plan(
    specs: Mapping[str, Spec],
    base: QuantConfig,
    overrides: Mapping[str, Override] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    target_bpw: Any = None,
    source: Source | None = None,
    scope: Scope = STATE_DICT,
) -> Plan:
    """Decide, for every name of ``specs``, whether and how it is quantized (the
    rules in the module docstring). ``source`` reads the tensors for the budget;
    it is needed only with ``target_bpw``."""
    overrides = overrides or {}
    unknown = [k for k in overrides if k not in specs]
    if unknown:
        raise ValueError(f"overrides name no {scope.noun} of {scope.place}: {unknown}")
    patterns = [re.compile(p) for p in exclude or ()]
    unmatched = [p.pattern for p in patterns if not any(p.search(k) for k in specs)]
    if unmatched:
        raise ValueError(f"exclude patterns match no {scope.noun} of {scope.place}: {unmatched}")
    configs = {}
    for name, spec in specs.items():
        if name in overrides:
            config = overridden(base, name, overrides[name])
            if not spec.floating:
                raise ValueError(f"overrides[{name!r}]: not a floating tensor")
        elif spec.floating and len(spec.shape) >= 2 and not any(p.search(name) for p in patterns):
            config = base
        else:
            continue
        if 0 not in spec.shape:
            configs[name] = config
    if target_bpw is None:
        return Plan(configs)
    target = check_target_bpw(target_bpw, base.bits)
    if source is None:
        raise TypeError("plan: target_bpw needs a source to read the tensors from")
    choices = choose(source, configs, set(overrides), base, target)
    return Plan(configs | {name: c.config for name, c in choices.items()}, choices)
