"""The rows of the suite: each method maps a state dict to its dequantized copy
and the bits per weight it stores, all metadata counted.

Every method quantizes the same tensors, the floating ones with 2+ dimensions
(:func:`weight_names`), and the bits per weight are over exactly those tensors:

| method | stored per tensor | bits per weight |
|---|---|---|
| RTN ch | symmetric absmax per row, 2^b - 1 levels, fp16 scale | b + 16 rows / n |
| RTN g64 | the same per flat block of 64 (last one zero-padded) | b + 16 / 64 (+ pad) |
| NFk g64 | NormalFloat levels, fp16 absmax per flat block of 64 | b + 16 / 64 (+ pad) |
| nuq ... | ``nuq_rs.quantize_state_dict`` with the options named | ``q.report()`` bytes |

NFk g64 is QLoRA's NF4 at 4 bits and its NF-k construction at other widths (:func:`nf_levels`).

New options of ``quantize_state_dict`` (``codebook=``, ``target_bpw=``, ``model=``) add
rows when its signature has them, so the suite runs before they land and picks them
up after; :func:`methods` says which rows were skipped and why.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

import nuq_rs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import baselines  # noqa: E402

BLOCK = 64
StateDict = dict[str, torch.Tensor]
#: ``run(state_dict, bits=..., target_bpw=..., model=...) -> (dequantized, bpw)``
Runner = Callable[..., tuple[StateDict, float]]


@dataclass(frozen=True)
class Method:
    """One row. ``bits`` / ``budget``: whether it fills the bit-width / budget columns."""

    name: str
    run: Runner
    bits: bool = True
    budget: bool = False
    needs_model: bool = False


def weight_names(sd: StateDict) -> list[str]:
    """The tensors every method quantizes: floating, 2+ dimensions."""
    return [k for k, v in sd.items() if v.is_floating_point() and v.ndim >= 2]


def _fp16(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).astype(np.float32)


def _flat_blocks(x: np.ndarray, size: int) -> np.ndarray:
    flat = x.ravel()
    return np.concatenate([flat, np.zeros((-flat.size) % size, np.float32)]).reshape(-1, size)


def rtn(x: np.ndarray, bits: int, block: int | None) -> tuple[np.ndarray, float]:
    """Symmetric round-to-nearest: per output channel (``block`` None) or per flat
    block. Returns the reconstruction and the stored bits (codes + fp16 scales)."""
    rows = x.reshape(x.shape[0], -1) if block is None else _flat_blocks(x, block)
    qmax = 2 ** (bits - 1) - 1
    scale = _fp16(np.abs(rows).max(axis=1, keepdims=True) / qmax)
    scale = np.where(scale > 0, scale, np.float32(1.0))
    deq = np.clip(np.rint(rows / scale), -qmax, qmax) * scale
    return deq.ravel()[: x.size].reshape(x.shape), bits * rows.size + 16 * len(rows)


@cache
def nf_levels(bits: int) -> np.ndarray:
    """QLoRA's NormalFloat construction at ``bits``: 2^(b-1) positive and
    2^(b-1) - 1 negative normal quantiles plus an exact zero, scaled to [-1, 1].
    The quantile offset is QLoRA's, 1/2 (1 - 1/(2 (2^b - 1)) + 1 - 1/(2^(b+1)))
    (0.9677 at 4 bits); at 4 bits the levels are the published NF4 table."""
    n = 2**bits
    offset = 0.5 * ((1 - 1 / (2 * (n - 1))) + (1 - 1 / (2 * n)))
    pos = stats.norm.ppf(np.linspace(offset, 0.5, n // 2 + 1)[:-1])
    neg = -stats.norm.ppf(np.linspace(offset, 0.5, n // 2)[:-1])
    levels = np.sort(np.concatenate([pos, [0.0], neg]))
    return levels / levels.max()


def nf(x: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """NF-k over flat blocks of 64 with an fp16 absmax (NF4 from ``baselines``)."""
    if bits == 4:
        deq, bpw = baselines.nf4(x, BLOCK)
        return deq, bpw * x.size
    levels = nf_levels(bits)
    b = _flat_blocks(x, BLOCK)
    absmax = _fp16(np.abs(b).max(axis=1, keepdims=True))
    absmax = np.where(absmax > 0, absmax, np.float32(1.0))
    codes = np.searchsorted(0.5 * (levels[1:] + levels[:-1]), b / absmax)
    deq = (levels[codes] * absmax).astype(np.float32)
    return deq.ravel()[: x.size].reshape(x.shape), bits * b.size + 16 * len(b)


def _baseline(fn: Callable[[np.ndarray, int], tuple[np.ndarray, float]]) -> Runner:
    def run(sd: StateDict, bits: int, **_: Any) -> tuple[StateDict, float]:
        out, stored, numel = dict(sd), 0.0, 0
        for k in weight_names(sd):
            x = sd[k].detach().float().numpy()
            deq, bits_stored = fn(x, bits)
            out[k] = torch.from_numpy(np.ascontiguousarray(deq, np.float32)).to(sd[k].dtype)
            stored += bits_stored
            numel += x.size
        return out, stored / numel

    return run


def _budget_bits(sd: StateDict, target_bpw: float) -> dict[str, int]:
    """The bit width that nuq's ``target_bpw`` rule gives each weight tensor
    (32: kept as it is)."""
    report = nuq_rs.quantize_state_dict(sd, target_bpw=target_bpw).report()
    choices = {k: report[k].choice for k in weight_names(sd)}
    return {k: 32 if c is None else int(c.split("b")[0]) for k, c in choices.items()}


def _budgeted(fn: Callable[[np.ndarray, int], tuple[np.ndarray, float]]) -> Runner:
    """A baseline under the same budget rule: each tensor at the width that
    nuq's ``target_bpw`` gives it, in the baseline's own layout (its bits per
    weight, all metadata counted, are reported as measured)."""

    def run(sd: StateDict, target_bpw: float, **_: Any) -> tuple[StateDict, float]:
        widths = _budget_bits(sd, target_bpw)
        out, stored, numel = dict(sd), 0.0, 0
        for k, bits in widths.items():
            x = sd[k].detach().float().numpy()
            deq, bits_stored = (x, 32 * x.size) if bits == 32 else fn(x, bits)
            out[k] = torch.from_numpy(np.ascontiguousarray(deq, np.float32)).to(sd[k].dtype)
            stored += bits_stored
            numel += x.size
        return out, stored / numel

    return run


def nuq_bits_per_weight(q: Any, names: list[str]) -> float:
    """Stored bits over ``names`` from the report (a tensor left unquantized
    counts at its own size, so a budget cannot hide one)."""
    report = q.report()
    numel = sum(report[k].numel for k in names)
    return 8 * sum(report[k].bytes_after for k in names) / numel


def _rows_not_divisible(sd: StateDict, size: int) -> list[str]:
    return [k for k in weight_names(sd) if math.prod(sd[k].shape[1:]) % size]


def _nuq(options: dict[str, Any], groups_fallback: bool = False) -> Runner:
    """``quantize_state_dict`` with ``options``. With ``groups_fallback``, a
    version that refuses groups which do not divide a row gets those tensors
    per channel instead (noted in :data:`NOTES`)."""

    def run(sd: StateDict, bits: int | None = None, **extra: Any) -> tuple[StateDict, float]:
        kwargs = options | {k: v for k, v in extra.items() if v is not None}
        if bits is not None:
            kwargs["bits"] = bits
        if "model" in kwargs:
            kwargs["model"] = copy.deepcopy(kwargs["model"])
        try:
            q = nuq_rs.quantize_state_dict(sd, **kwargs)
        except ValueError as e:
            if not groups_fallback or "does not divide" not in str(e):
                raise
            odd = _rows_not_divisible(sd, options["group_size"])
            share = sum(sd[k].numel() for k in odd) / sum(sd[k].numel() for k in weight_names(sd))
            NOTES.add(
                f"group {options['group_size']}: this nuq_rs refuses a group size that does not "
                f"divide the row, so {len(odd)} tensors ({100 * share:.1f}% of the weights) "
                "are per channel"
            )
            overrides = {k: {"granularity": "channel"} for k in odd}
            q = nuq_rs.quantize_state_dict(sd, overrides=overrides, **kwargs)
        return q.dequantize(), nuq_bits_per_weight(q, weight_names(sd))

    return run


#: What the nuq rows had to change to run on this case (the suite prints and clears it).
NOTES: set[str] = set()


def methods() -> tuple[list[Method], list[str]]:
    """The rows for the installed nuq_rs, and a line per row that it cannot run."""
    params = inspect.signature(nuq_rs.quantize_state_dict).parameters
    # The paper's codebook, named where the option exists (it may stop being the default).
    paper = {"codebook": "lloyd-max"} if "codebook" in params else {}
    rows = [
        Method("RTN ch", _baseline(lambda x, b: rtn(x, b, None))),
        Method(f"RTN g{BLOCK}", _baseline(lambda x, b: rtn(x, b, BLOCK))),
        Method(f"NFk g{BLOCK}", _baseline(nf)),
        Method("nuq tensor (paper)", _nuq({"granularity": "tensor"} | paper)),
        Method("nuq ch", _nuq({"granularity": "channel"} | paper)),
        Method(f"nuq g{BLOCK}", _nuq({"group_size": BLOCK} | paper, groups_fallback=True)),
        Method("nuq default", _nuq({})),
    ]
    skipped = []
    if "codebook" in params:
        rows += [
            Method("nuq ch fitted", _nuq({"granularity": "channel", "codebook": "fitted"})),
            Method(
                f"nuq g{BLOCK} fitted",
                _nuq({"group_size": BLOCK, "codebook": "fitted"}, groups_fallback=True),
            ),
        ]
    else:
        skipped.append("codebook= (nuq ch fitted, nuq g64 fitted): not in quantize_state_dict")
    if "model" in params:
        rows.append(Method("nuq default + bias corr", _nuq({}), needs_model=True))
    else:
        skipped.append("model= (nuq default + bias corr): not in quantize_state_dict")
    if "target_bpw" in params:
        rows += [
            Method(f"RTN g{BLOCK} budget", _budgeted(lambda x, b: rtn(x, b, BLOCK)), False, True),
            Method(f"NFk g{BLOCK} budget", _budgeted(nf), bits=False, budget=True),
            Method("nuq budget", _nuq({}), bits=False, budget=True),
        ]
        if "model" in params:
            rows.append(
                Method(
                    "nuq budget + bias corr", _nuq({}), bits=False, budget=True, needs_model=True
                )
            )
    else:
        skipped.append("target_bpw= (nuq budget): not in quantize_state_dict")
    return rows, skipped


class WeightSQNR:
    """Mean over the quantized tensors of the SQNR (dB), and of the SQNR of each
    tensor's largest 1 % of weights by magnitude (at least one weight), against
    reference weights prepared once. Exact tensors count as 150 dB."""

    def __init__(self, ref: StateDict) -> None:
        self.tensors = {}
        for k in weight_names(ref):
            x = ref[k].detach().float().numpy().ravel()
            k_top = max(1, math.ceil(0.01 * x.size))
            top = np.argpartition(np.abs(x), x.size - k_top)[x.size - k_top :]
            self.tensors[k] = (x, top, _energy(x), _energy(x[top]))

    def __call__(self, deq: StateDict) -> tuple[float, float]:
        all_db, top_db = [], []
        for k, (x, top, signal, signal_top) in self.tensors.items():
            err = deq[k].detach().float().numpy().ravel() - x
            all_db.append(_db(signal, _energy(err)))
            top_db.append(_db(signal_top, _energy(err[top])))
        return float(np.mean(all_db)), float(np.mean(top_db))


def _energy(v: np.ndarray) -> float:
    return float(np.dot(v.astype(np.float64), v.astype(np.float64)))


def _db(signal: float, noise: float) -> float:
    return min(150.0, 10 * math.log10(signal / noise)) if noise > 0 else 150.0
