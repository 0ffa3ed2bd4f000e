"""Whole state dicts: :func:`quantize_state_dict` and :class:`QuantizedStateDict`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from . import _arrays
from ._budget import Choice, state_dict_source
from ._options import QuantConfig
from ._overlap import run_in_order
from ._plan import Override, Spec, plan
from ._report import Report, report_row
from ._tensor import QuantizedTensor, quantize_with


class QuantizedStateDict(Mapping[str, Any]):
    """Name -> :class:`QuantizedTensor` (quantized) or the original tensor (kept),
    in the order of the input state dict."""

    def __init__(
        self, entries: dict[str, Any], choices: Mapping[str, Choice] | None = None
    ) -> None:
        self._entries = entries
        self._choices = dict(choices or {})
        #: What ``quantize_state_dict(..., model=)`` corrected (None without a model).
        self.bias_correction: Any = None

    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def quantized_names(self) -> list[str]:
        return [k for k, v in self._entries.items() if isinstance(v, QuantizedTensor)]

    def dequantize(self) -> dict[str, Any]:
        """A plain state dict: decoded tensors in their original shapes and dtypes
        (on the CPU), kept tensors as they were. Feeds ``model.load_state_dict``."""
        return {
            k: v.dequantize() if isinstance(v, QuantizedTensor) else v
            for k, v in self._entries.items()
        }

    def report(self) -> Report:
        """Per-tensor statistics and totals; ``print()`` it for a table."""
        return Report(
            tuple(report_row(k, v, self._choices.get(k)) for k, v in self._entries.items())
        )

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write a safetensors file that :func:`nuq_rs.load` reads back.

        Packed codes, codebooks, locations and scales are stored as tensors,
        kept tensors as they are, and the decoding options and statistics as
        JSON metadata. The file appears complete or not at all (written under a
        temporary name, then renamed); an existing ``path`` is refused unless
        ``overwrite=True``.

        >>> import torch, nuq_rs, tempfile, os
        >>> q = nuq_rs.quantize_state_dict(torch.nn.Linear(64, 32).state_dict())
        >>> path = os.path.join(tempfile.mkdtemp(), "linear.nuq.safetensors")
        >>> q.save(path)
        >>> sorted(nuq_rs.load(path))
        ['bias', 'weight']
        """
        from ._writer import FileWriter, Planned, kept_bytes

        plan, kept = [], {}
        for name, v in self._entries.items():
            if isinstance(v, QuantizedTensor):
                plan.append(Planned(name, v.shape, v.dtype, v.config))
            else:
                code, shape, kept[name] = kept_bytes(name, v)
                plan.append(Planned(name, shape, code))
        with FileWriter(path, plan, overwrite=overwrite) as writer:
            for name in self.quantized_names:
                writer.write_quantized(name, self._entries[name])
            for name, data in kept.items():
                writer.write_kept(name, data)
            writer.commit()


def quantize_state_dict(
    state_dict: Mapping[str, Any],
    bits: int = 4,
    *,
    granularity: str = "group",
    group_size: int | None = None,
    family: str = "auto",
    codebook: str = "fitted",
    overrides: Mapping[str, Override] | None = None,
    exclude: list[str] | tuple[str, ...] | None = None,
    target_bpw: float | None = None,
    model: Any = None,
) -> QuantizedStateDict:
    """Quantize every floating tensor with 2+ dimensions of a state dict.

    1-D tensors (biases, norms), integer tensors and names matching one of the
    ``exclude`` regular expressions are kept as they are. ``overrides`` maps a
    tensor name to its own bits (``{"fc.weight": 8}``) or options
    (``{"conv1.weight": {"granularity": "channel"}}``); an override can also
    quantize a 1-D tensor. Every option is checked before any work starts, and
    an error names the tensor concerned. Accepts torch tensors (CPU or CUDA;
    fp32, fp16, bf16) and NumPy arrays; results live on the CPU.

    ``target_bpw`` (mixed precision to a size budget, data-free): each tensor
    gets the bits (2..8) and granularity that keep the stored bits of all
    quantized tensors, metadata included, within ``target_bpw`` per weight while
    keeping the summed relative error small (see ``nuq_rs._budget``; the report
    shows each tensor's ``choice`` and ``proxy``). ``bits`` must then stay at its
    default; a granularity other than the default (groups of 64) restricts every
    tensor to it; overrides stay as given and count in the budget.

    ``model`` (the ``nn.Module`` whose ``state_dict()`` this is) turns on
    data-free bias correction (Nagel et al. 2019): for every quantized conv or
    linear layer whose input mean follows from a BatchNorm before it (traced
    with ``torch.fx``), the output shift ``(W_q - W) E[x]`` is removed from its
    bias, or from the ``running_mean`` of the BatchNorm after it. Layers whose
    input mean is unknown are left alone; ``q.bias_correction.rows`` says, per
    layer, what was done or why not. The model itself is not changed.

    >>> import torch, nuq_rs
    >>> model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ReLU(),
    ...                             torch.nn.Linear(128, 10))
    >>> q = nuq_rs.quantize_state_dict(model.state_dict(), bits=4)
    >>> q.quantized_names
    ['0.weight', '2.weight']
    >>> model.load_state_dict(q.dequantize())
    <All keys matched successfully>
    >>> round(q.report().bits_per_weight, 2)
    4.28
    >>> q = nuq_rs.quantize_state_dict(model.state_dict(), target_bpw=4.5)
    >>> q.report().bits_per_weight <= 4.5
    True
    """
    base = QuantConfig(bits, granularity, group_size, family, codebook)
    decided = plan(
        specs(state_dict),
        base,
        overrides,
        exclude,
        target_bpw=target_bpw,
        source=state_dict_source(state_dict),
    )
    quantized = run_in_order(
        [(name, (state_dict[name], config)) for name, config in decided.configs.items()],
        lambda name, job: quantize_with(job[0], job[1], name),
        lambda job: 4 * math.prod(job[0].shape),
    )
    entries = {k: quantized.get(k, v) for k, v in state_dict.items()}
    result = QuantizedStateDict(entries, decided.choices)
    if model is not None:
        result.bias_correction = _correct_biases(model, entries)
    return result


def _correct_biases(model: Any, entries: dict[str, Any]) -> Any:
    """Folds the bias correction of ``model`` into the kept tensors of ``entries``."""
    import torch

    from ._bias import correct_biases

    decoded = {
        k: torch.as_tensor(v.dequantize())
        for k, v in entries.items()
        if isinstance(v, QuantizedTensor)
    }
    correction = correct_biases(model, decoded)
    missing = [k for k in correction.updates if k not in entries]
    if missing:
        raise ValueError(f"model: its tensors {missing} are not in the state dict")
    for name, value in correction.updates.items():
        if not isinstance(entries[name], QuantizedTensor):
            entries[name] = value.detach().cpu().to(torch.as_tensor(entries[name]).dtype)
    return correction


def specs(state_dict: Mapping[str, Any]) -> dict[str, Spec]:
    """What the planner needs of every tensor of ``state_dict``."""
    return {
        k: Spec(tuple(getattr(v, "shape", ())), _arrays.is_floating(v))
        for k, v in state_dict.items()
    }
