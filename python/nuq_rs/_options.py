"""Every option a user gives, checked in one place and worded once.

| option | checked by |
|---|---|
| ``bits``, ``granularity``, ``group_size``, ``family``, ``codebook`` | :class:`QuantConfig` |
| ``overrides[name]``: bits, or a dict of the options above | :func:`overridden` |
| ``target_bpw`` (with ``bits`` left at 4) | :func:`check_target_bpw` |
| ``activations`` of the ``nuq_rs.nn`` layers | :func:`check_activations` |

The core checks its own arguments too (``bits must be in 1..=8``), as a guard for
direct callers; the wording here is the core's, so a user reads one sentence
whichever layer refuses a value. Errors about one tensor or module name it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

GRANULARITIES = ("tensor", "channel", "group")
FAMILIES = ("auto", "gaussian", "laplace")
CODEBOOKS = ("fitted", "lloyd-max")
ACTIVATIONS = ("fp32", "int8")
#: The group size of ``granularity="group"`` when none is given.
DEFAULT_GROUP_SIZE = 64
#: The bits that ``target_bpw`` requires (the budget chooses each tensor's own).
BUDGET_BITS = 4


@dataclass(frozen=True)
class QuantConfig:
    """How one tensor is quantized; checked when made.

    ``group_size`` implies ``granularity="group"``; ``granularity="group"``
    without one takes groups of ``DEFAULT_GROUP_SIZE`` (64). ``codebook="fitted"``
    fits the codebook to the tensor's own weights with every span's extremes
    kept exact; ``"lloyd-max"`` is the paper's Lloyd–Max quantizer of the
    fitted density (for groups, the family's implied codebook).
    """

    bits: int = 4
    granularity: str = "group"
    group_size: int | None = None
    family: str = "auto"
    codebook: str = "fitted"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int | np.integer):
            raise TypeError(f"bits must be an int, got {type(self.bits).__name__}")
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..=8, got {self.bits}")
        _check_choice("granularity", self.granularity, GRANULARITIES)
        if self.group_size is not None:
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
                raise TypeError(f"group_size must be an int, got {type(self.group_size).__name__}")
            if self.group_size <= 0:
                raise ValueError(f"group_size must be > 0, got {self.group_size}")
            if self.granularity == "channel":
                raise ValueError("group_size cannot be combined with granularity='channel'")
            object.__setattr__(self, "granularity", "group")
        elif self.granularity == "group":
            object.__setattr__(self, "group_size", DEFAULT_GROUP_SIZE)
        _check_choice("family", self.family, FAMILIES)
        _check_choice("codebook", self.codebook, CODEBOOKS)

    def replace(self, **changes: Any) -> QuantConfig:
        """A copy with some fields changed (``group_size`` resets the granularity)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if "group_size" in changes and "granularity" not in changes:
            values["granularity"] = "tensor" if changes["group_size"] is None else "group"
        if changes.get("granularity") in ("tensor", "channel") and "group_size" not in changes:
            values["group_size"] = None
        values.update(changes)
        return QuantConfig(**values)


def overridden(base: QuantConfig, name: str, value: int | Mapping[str, Any]) -> QuantConfig:
    """``base`` changed by ``overrides[name]``: bits, or a dict of options."""
    try:
        if isinstance(value, Mapping):
            extra = set(value) - {f.name for f in fields(QuantConfig)}
            if extra:
                raise ValueError(f"unknown options {sorted(extra)}")
            return base.replace(**value)
        return base.replace(bits=value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"overrides[{name!r}]: {e}") from None


def check_target_bpw(target_bpw: Any, bits: int) -> float:
    """``target_bpw`` as a float; ``bits`` must be left at ``BUDGET_BITS``."""
    if isinstance(target_bpw, bool) or not isinstance(target_bpw, int | float | np.floating):
        raise TypeError(f"target_bpw must be a number, got {type(target_bpw).__name__}")
    value = float(target_bpw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"target_bpw must be a finite number > 0, got {target_bpw}")
    if bits != BUDGET_BITS:
        raise ValueError(
            f"bits={bits} cannot be combined with target_bpw: the budget chooses each "
            "tensor's bits; fix a tensor's bits with overrides instead"
        )
    return value


def check_activations(activations: str) -> str:
    """``activations`` of the ``nuq_rs.nn`` layers, checked."""
    _check_choice("activations", activations, ACTIVATIONS)
    return activations


def _check_choice(option: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        expected = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"unknown {option} {value!r}; expected {expected}")
