"""What every case gives the suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Case:
    """One real model on real data.

    ``evaluate`` loads a (dequantized) state dict into the float model and returns
    its metrics, the headline ``metric`` first among ``columns``; higher is better
    for the headline, and every metric compares the model with its own fp32 outputs
    or with the data's labels. ``model`` is the fp32 ``nn.Module`` (for options that
    need the module, such as bias correction), or None where the case has none.
    """

    name: str
    title: str
    state_dict: dict[str, torch.Tensor]
    evaluate: Callable[[dict[str, torch.Tensor]], dict[str, float]]
    metric: str
    columns: tuple[str, ...]
    model: Any = None
    notes: list[str] = field(default_factory=list)
