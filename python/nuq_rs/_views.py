"""NumPy views of the CPU tensors that the LUT layers hand to the kernels, made
once per weight instead of once per call (``Tensor.numpy()`` costs about as
much as a small kernel call).

A :class:`NumpyViews` keeps the views of the tensors it was last asked for and
returns them again while the same tensor objects, over the same memory, are
asked for. Replacing a tensor (``load_state_dict(..., assign=True)``, a packed
weight's ``copy_``, ``param.data = ...``) makes new views; in-place writes
(``load_state_dict``'s ``copy_``) show through the old ones, which share the
tensors' memory.
"""

from __future__ import annotations

import numpy as np
import torch


class NumpyViews:
    """The views of one tuple of tensors (see the module docstring). Copies and
    pickles of it start empty: their views would belong to other tensors."""

    __slots__ = ("_tensors", "_key", "_arrays")

    def __init__(self) -> None:
        self._tensors: tuple[torch.Tensor, ...] = ()
        self._key: tuple[int, ...] = ()
        self._arrays: tuple[np.ndarray, ...] = ()

    def of(self, tensors: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, ...]:
        """``t.numpy()`` of every tensor (detached first if it requires grad)."""
        # The ids stay unique while `_tensors` holds the objects.
        key = (*map(id, tensors), *map(_data_ptr, tensors))
        if key != self._key:
            self._arrays = tuple(_numpy(t) for t in tensors)
            self._tensors, self._key = tensors, key
        return self._arrays

    def one(self, t: torch.Tensor) -> np.ndarray:
        """``of((t,))[0]``, with less work per call."""
        if self._tensors and self._tensors[0] is t and self._key[1] == t.data_ptr():
            return self._arrays[0]
        return self.of((t,))[0]

    def __deepcopy__(self, memo: dict) -> NumpyViews:
        return NumpyViews()

    def __reduce__(self) -> tuple:
        return (NumpyViews, ())


_data_ptr = torch.Tensor.data_ptr


def _numpy(t: torch.Tensor) -> np.ndarray:
    return (t.detach() if t.requires_grad else t).numpy()


def f32_array(t: torch.Tensor) -> np.ndarray:
    """``t`` as a C-contiguous float32 NumPy array: a view when ``t`` already is
    float32 and contiguous, else a converted copy."""
    if t.requires_grad:
        t = t.detach()
    if t.dtype is not torch.float32:
        t = t.to(torch.float32)
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def bias_array(views: NumpyViews, bias: torch.Tensor | None) -> np.ndarray | None:
    """``bias`` as float32 for the kernels: through ``views`` when that needs no
    copy (a copy would not see in-place writes to ``bias``)."""
    if bias is None:
        return None
    if bias.dtype is torch.float32 and bias.is_contiguous():
        return views.one(bias)
    return f32_array(bias)
