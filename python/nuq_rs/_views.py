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
    pickles of it start empty: their views would belong to other tensors.

    The state is one tuple, read and replaced whole, so threads that share a
    layer never see the views of one call with the key of another."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # (key, tensors, views); the ids in the key stay unique while the
        # tensors are held here.
        self._state: tuple[tuple[int, ...], tuple, tuple] = ((), (), ())

    def of(self, tensors: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, ...]:
        """``t.numpy()`` of every tensor (detached first if it requires grad)."""
        key = (*map(id, tensors), *map(_data_ptr, tensors))
        state = self._state
        if key != state[0]:
            state = (key, tensors, tuple(_numpy(t) for t in tensors))
            self._state = state
        return state[2]

    def one(self, t: torch.Tensor) -> np.ndarray:
        """``of((t,))[0]``, with less work per call."""
        key, tensors, arrays = self._state
        if len(tensors) == 1 and tensors[0] is t and key[1] == t.data_ptr():
            return arrays[0]
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
