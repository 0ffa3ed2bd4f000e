"""The packed weight tensor: :class:`PackedWeight`, a ``torch.Tensor`` subclass that
stands in for a module's ``weight`` parameter (torchao's convention: a wrapper
subclass with ``__torch_dispatch__``).

It holds the parts of one :class:`nuq_rs.QuantizedTensor` (``packed`` codes,
``levels``, ``loc``, ``scale``) and reports the original shape and dtype, so the
model's own modules and ``forward`` run unchanged. At the ``aten`` level:

- ``addmm`` / ``mm`` / ``matmul`` with the weight transposed (``F.linear``,
  ``x @ w.t()``, GPT-2's ``Conv1D``), and ``w @ x``: the LUT matmul (``nuq_core::lut``);
- ``convolution`` (``F.conv1d``, ``F.conv2d``; not transposed convolutions): the
  LUT convolution;
- ``embedding`` (``F.embedding``): a decode of the rows asked for;
- ``t`` / ``transpose`` / ``permute`` of a matrix, ``split`` / ``slice`` of rows,
  ``detach``, ``clone``, ``copy_`` from a packed tensor, ``to`` the CPU in the
  same dtype: packed views or copies, nothing decoded;
- ``to`` another dtype or device (``.half()``, ``.cuda()``), writes into the
  weight: a ``TypeError``;
- anything else: runs on the decoded weight (correct, slower).

The LUT paths never build the fp32 weight. They are inference-only: an input
that requires grad while grad mode is on is refused with a ``RuntimeError``.
Inputs of any float dtype are computed in fp32 and returned in their dtype.
``torch.save`` of a state dict holding packed weights and
``torch.load(..., weights_only=True)`` round-trip once this module is imported
(``import nuq_rs`` after torch does it): it registers its rebuild function with
``torch.serialization.add_safe_globals``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import return_and_correct_aliasing
from torch.utils._pytree import tree_map

from ._nuq_rs import conv2d as _conv2d
from ._nuq_rs import dequantize as _dequantize
from ._nuq_rs import linear as _linear
from ._tensor import QuantizedTensor, matrix_shape
from ._views import NumpyViews, bias_array, f32_array

__all__ = ["PackedWeight"]

aten = torch.ops.aten
PARTS = ("packed", "levels", "loc", "scale")


class PackedWeight(torch.Tensor):
    """A weight kept as packed codes, whose ``F.linear`` / ``F.conv2d`` /
    ``F.embedding`` run on the codes (see the module docstring).

    ``stored_shape`` is the shape that was quantized (rows = its first
    dimension); ``transposed`` (2-D only) means the tensor is the transpose of
    that matrix. ``int8`` opts the LUT matmul into int8 activations (see
    :mod:`nuq_rs.nn`).

    >>> import torch, nuq_rs
    >>> from nuq_rs import PackedWeight
    >>> lin = torch.nn.Linear(64, 16)
    >>> w = PackedWeight.from_quantized(nuq_rs.quantize_tensor(lin.weight.detach(), bits=8))
    >>> w.shape, w.dtype
    (torch.Size([16, 64]), torch.float32)
    >>> x = torch.ones(2, 64)
    >>> err = (torch.nn.functional.linear(x, w) - x @ w.dequantize().t()).abs().max()
    >>> bool(err < 1e-4)
    True
    """

    packed: torch.Tensor
    levels: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    @staticmethod
    def __new__(
        cls,
        packed: torch.Tensor,
        levels: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        stored_shape: tuple[int, ...],
        dtype: torch.dtype,
        bits: int,
        group_size: int | None,
        transposed: bool = False,
        int8: bool = False,
    ) -> PackedWeight:
        shape = tuple(reversed(stored_shape)) if transposed else tuple(stored_shape)
        return torch.Tensor._make_wrapper_subclass(
            cls, shape, dtype=dtype, device=packed.device, requires_grad=False
        )

    def __init__(
        self,
        packed: torch.Tensor,
        levels: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        stored_shape: tuple[int, ...],
        dtype: torch.dtype,
        bits: int,
        group_size: int | None,
        transposed: bool = False,
        int8: bool = False,
    ) -> None:
        if transposed and len(stored_shape) != 2:
            raise ValueError(f"only a matrix can be transposed, not shape {list(stored_shape)}")
        self.packed, self.levels, self.loc, self.scale = packed, levels, loc, scale
        self.stored_shape = stored_shape
        self.bits, self.group_size = int(bits), group_size
        self.transposed, self.int8 = bool(transposed), bool(int8)
        # NumPy views of the parts and the bias for the kernels, kept between
        # calls; the dtype as a plain attribute (`self.dtype` goes through
        # `__torch_function__`).
        self._views, self._bias_views = NumpyViews(), NumpyViews()
        self._dtype = dtype

    @classmethod
    def from_quantized(
        cls, q: QuantizedTensor, *, transposed: bool = False, int8: bool = False
    ) -> PackedWeight:
        """The packed weight of ``q`` (its arrays are shared, not copied, where
        they are contiguous)."""
        parts = [torch.from_numpy(np.ascontiguousarray(getattr(q, p))) for p in PARTS]
        parts[3] = parts[3].to(torch.float32)
        dtype = getattr(torch, q.dtype)
        return cls(
            *parts, q.shape, dtype, q.bits, q.config.group_size, transposed=transposed, int8=int8
        )

    # ---- subclass protocol ------------------------------------------------

    def __tensor_flatten__(self) -> tuple[list[str], tuple[Any, ...]]:
        meta = (self.stored_shape, self.dtype, self.bits, self.group_size)
        return list(PARTS), (*meta, self.transposed, self.int8)

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride) -> PackedWeight:
        return PackedWeight(*(inner[p] for p in PARTS), *meta)

    def __reduce_ex__(self, protocol: int):
        # Plain tensors and Python values only, so torch.load(weights_only=True) reads it.
        names, meta = self.__tensor_flatten__()
        parts = tuple(getattr(self, p) for p in names)
        return (_rebuild, (parts, meta))

    def __repr__(self) -> str:
        rows, cols = matrix_shape(self.stored_shape)
        group = f", group_size={self.group_size}" if self.group_size else ""
        flag = ", transposed" if self.transposed else ""
        return (
            f"PackedWeight(shape={list(self.shape)}, dtype={self.dtype}, bits={self.bits}"
            f"{group}{flag}, packed_bytes={self.packed.numel()})"
        )

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _FUNCTIONS.get(func)
        if handler is not None:  # before composite ops break them down (expand, bmm)
            out = handler(func, *args, **kwargs)
            if out is not NotImplemented:
                return out
        elif func in _MOVES:  # refused before torch looks for a CUDA device
            _check_move(func, *args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is not None:
            out = handler(func, *args, **kwargs)
            if out is not NotImplemented and func in _VIEWS:
                return return_and_correct_aliasing(func, args, kwargs, out)
            if out is not NotImplemented:
                return out
        # Composite ops (F.linear, conv2d, matmul, chunk, ... reach here whole under
        # inference_mode): their decomposition reaches the handlers above.
        out = func.decompose(*args, **kwargs)
        if out is not NotImplemented:
            return out
        _refuse_writes(func, args, kwargs)
        return func(*tree_map(_decoded, args), **tree_map(_decoded, kwargs))

    # ---- decoding and the kernels ------------------------------------------

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return self._stored_shape

    @stored_shape.setter
    def stored_shape(self, shape: tuple[int, ...]) -> None:
        self._stored_shape = tuple(int(n) for n in shape)
        self._matrix = matrix_shape(self._stored_shape)

    @property
    def rows(self) -> int:
        return self._matrix[0]

    @property
    def cols(self) -> int:
        return self._matrix[1]

    def dequantize(self) -> torch.Tensor:
        """The decoded weight: a plain tensor of this shape and dtype."""
        if self.numel() == 0:
            return torch.zeros(self.shape, dtype=self.dtype)
        w = _dequantize(*self._arrays(), self.rows, self.cols, self.bits, self.group_size)
        w = torch.from_numpy(w).reshape(self.stored_shape).to(self.dtype)
        return w.t() if self.transposed else w

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self._views.of((self.packed, self.levels, self.loc, self.scale))

    def _with(self, **changes: Any) -> PackedWeight:
        names, (shape, dtype, bits, group, transposed, int8) = self.__tensor_flatten__()
        parts = {p: getattr(self, p) for p in names}
        meta = dict(stored_shape=shape, dtype=dtype, bits=bits, group_size=group)
        meta |= dict(transposed=transposed, int8=int8)
        for key, value in changes.items():
            (parts if key in parts else meta)[key] = value
        # A view of a normal tensor must be a normal tensor, even under inference_mode.
        with torch.inference_mode(self.is_inference()):
            return PackedWeight(*(parts[p] for p in PARTS), **meta)

    def _row_parts(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """``packed``, ``loc`` and ``scale`` of the rows ``index`` (a slice gives views).
        Groups have scales per row; otherwise ``loc`` and ``scale`` hold one value
        per row or one for the tensor (the same thing for a single row)."""
        rows = self.rows
        packed = self.packed.reshape(rows, -1)[index].reshape(-1)
        loc = self.loc[index] if self.loc.numel() == rows > 1 else self.loc
        scale = self.scale
        if self.group_size is not None or scale.numel() == rows > 1:
            scale = scale.reshape(rows, -1)[index].reshape(-1)
        return {"packed": packed, "loc": loc, "scale": scale}

    def linear(self, x2: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x2 @ W^T (+ bias)`` for ``W`` the stored matrix and ``x2`` of ``cols`` columns."""
        rows, cols = self._matrix
        if rows == 0 or cols == 0:  # an empty row slice, or no inputs
            y = torch.zeros(x2.shape[0], rows)
            return y if bias is None else y + bias.detach().to(torch.float32)
        y = _linear(
            f32_array(x2),
            *self._arrays(),
            rows,
            cols,
            self.bits,
            self.group_size,
            bias_array(self._bias_views, bias),
            self.int8,
        )
        return torch.from_numpy(y)

    def conv2d(self, x: torch.Tensor, bias, stride, padding, dilation, groups) -> torch.Tensor:
        """The LUT convolution of an NCHW input with the stored (out, in/groups, kh, kw)."""
        geometry = (
            tuple(self.stored_shape[2:]),
            tuple(stride),
            tuple(padding),
            tuple(dilation),
            groups,
        )
        rows, cols = self._matrix
        y = _conv2d(
            f32_array(x),
            *self._arrays(),
            rows,
            cols,
            self.bits,
            self.group_size,
            bias_array(self._bias_views, bias),
            geometry,
        )
        return torch.from_numpy(y)

    def rows_decoded(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (any shape of int64) decoded: ``index.shape + (cols,)``."""
        flat = index.reshape(-1).to(torch.int64)
        unique, inverse = torch.unique(flat, return_inverse=True)
        if unique.numel() and (unique[0] < 0 or unique[-1] >= self.rows):
            raise IndexError(f"index out of range for a packed weight of {self.rows} rows")
        if unique.numel() == 0 or self.cols == 0:
            return torch.zeros(*index.shape, self.cols, dtype=self.dtype)
        part = self._row_parts(unique)
        arrays = (part["packed"], self.levels, part["loc"], part["scale"])
        w = _dequantize(
            *(a.numpy() for a in arrays), unique.numel(), self.cols, self.bits, self.group_size
        )
        w = torch.from_numpy(w).reshape(unique.numel(), self.cols)[inverse]
        return w.reshape(*index.shape, self.cols).to(self.dtype)


_MOVES = {
    torch.Tensor.to: None,
    torch.Tensor.cuda: "cuda",
    torch.Tensor.half: torch.float16,
    torch.Tensor.bfloat16: torch.bfloat16,
    torch.Tensor.float: torch.float32,
    torch.Tensor.double: torch.float64,
}


def _check_move(func, w: Any, *args: Any, **kwargs: Any) -> None:
    """Refuses ``w.to(...)`` / ``.cuda()`` / ``.half()`` ... that would leave the
    CPU or change the dtype."""
    if not isinstance(w, PackedWeight):
        return
    target = _MOVES[func]
    if func is torch.Tensor.to:
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
    elif isinstance(target, torch.dtype):
        device, dtype = None, target
    else:
        device, dtype = torch.device("cuda"), None
    _refuse_move(w, device, dtype)


def _refuse_move(w: PackedWeight, device: Any, dtype: torch.dtype | None) -> None:
    device = torch.device(device) if device is not None else w.device
    if dtype not in (None, w.dtype) or device.type != "cpu":
        where = f"dtype {dtype}" if dtype not in (None, w.dtype) else f"device {device}"
        raise TypeError(
            f"a nuq_rs packed weight stays {w.dtype} on the CPU; cannot move it to {where} "
            "(decode it first with .dequantize(), or quantize the converted float model)"
        )


def _rebuild(parts: tuple[torch.Tensor, ...], meta: tuple[Any, ...]) -> PackedWeight:
    return PackedWeight(*parts, *meta)


def _decoded(x: Any) -> Any:
    return x.dequantize() if isinstance(x, PackedWeight) else x


def _refuse_writes(func, args, kwargs) -> None:
    schema = func._schema
    for i, arg in enumerate(schema.arguments):
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        if isinstance(value, PackedWeight) and arg.alias_info is not None:
            if arg.alias_info.is_write:
                raise TypeError(
                    f"{func}: packed weights are read-only (decode one with .dequantize(), "
                    "or quantize again with nuq_rs.quantize_)"
                )


def _refuse_grad(x: torch.Tensor) -> None:
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError(
            "nuq_rs packed weights are inference-only (they have no gradient): "
            "call the model under torch.no_grad() or torch.inference_mode()"
        )


def _on_cpu(x: torch.Tensor) -> None:
    if not x.is_cpu:
        raise ValueError(
            f"nuq_rs packed weights run on the CPU; got an input on {x.device}: move it with .cpu()"
        )


# ---- handlers: return NotImplemented to fall back to decoding ---------------


def _transpose(func, w, *args, **kwargs):
    if not isinstance(w, PackedWeight) or w.ndim != 2:
        return NotImplemented
    if func is aten.transpose.int and sorted(d % 2 for d in args[:2]) != [0, 1]:
        return NotImplemented
    if func is aten.permute.default and [d % 2 for d in args[0]] != [1, 0]:
        return NotImplemented
    return w._with(transposed=not w.transposed)


def _mm(a: Any, b: Any, bias: Any = None) -> Any:
    """``a @ b (+ bias)`` through the LUT when one side is packed the right way round."""
    if isinstance(b, PackedWeight) and b.transposed and not isinstance(a, PackedWeight):
        return _lut_mm(a, b, bias, flip=False)
    if isinstance(a, PackedWeight) and not a.transposed and not isinstance(b, PackedWeight):
        return _lut_mm(b.t(), a, bias, flip=True)
    return NotImplemented


def _lut_mm(x: torch.Tensor, w: PackedWeight, bias: Any, flip: bool) -> torch.Tensor:
    """``x @ W^T (+ bias)`` for ``W`` the stored matrix of ``w`` (``flip``: its
    transpose, ``W @ x^T``, with ``bias`` added after)."""
    _on_cpu(x)
    _refuse_grad(x)
    fused = not flip and bias is not None and bias.ndim == 1 and bias.shape[0] == w.rows
    y = w.linear(x, bias if fused else None)
    y = y.t() if flip else y
    if bias is not None and not fused:
        y = y + bias.to(torch.float32)
    if x.dtype is torch.float32 and w._dtype is torch.float32:
        return y
    return y.to(torch.promote_types(x.dtype, w._dtype))


def _matmul(func, a, b):
    """``a @ b`` of any batch shape of ``a`` with ``b`` a packed ``W^T``, or ``W @ b``
    for a matrix ``b``; the batch is folded into rows (as ``F.linear`` does)."""
    if isinstance(b, PackedWeight) and b.transposed and isinstance(a, torch.Tensor):
        if isinstance(a, PackedWeight) or a.ndim < 1:
            return NotImplemented
        y = _mm(a.reshape(-1, a.shape[-1]), b)
        return y if y is NotImplemented else y.reshape(*a.shape[:-1], b.shape[1])
    if isinstance(a, PackedWeight) and isinstance(b, torch.Tensor) and b.ndim == 2:
        return _mm(a, b)
    return NotImplemented


def _linear_fn(func, x, w, bias=None):
    if not isinstance(w, PackedWeight) or w.transposed or len(w.stored_shape) != 2:
        return NotImplemented
    if not isinstance(x, torch.Tensor) or isinstance(x, PackedWeight) or x.ndim < 1:
        return NotImplemented
    # F.linear multiplies by the stored matrix's transpose: no transposed view needed.
    if x.ndim == 2:
        return _lut_mm(x, w, bias, flip=False)
    y = _lut_mm(x.reshape(-1, x.shape[-1]), w, bias, flip=False)
    return y.reshape(*x.shape[:-1], w.rows)


def _mm_handler(func, a, b):
    return _mm(a, b)


def _addmm_handler(func, bias, a, b, *, beta=1, alpha=1):
    if beta != 1 or alpha != 1:
        return NotImplemented
    return _mm(a, b, bias)


def _convolution(func, x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    if not isinstance(w, PackedWeight) or isinstance(x, PackedWeight) or transposed:
        return NotImplemented
    if w.transposed or w.ndim not in (3, 4):
        return NotImplemented
    _on_cpu(x)
    _refuse_grad(x)
    if w.ndim == 3:  # conv1d: a convolution of height 1
        w2 = w._with(stored_shape=(*w.stored_shape[:2], 1, w.stored_shape[2]))
        y = w2.conv2d(x.unsqueeze(2), bias, (1, *stride), (0, *padding), (1, *dilation), groups)
        return y.squeeze(2).to(x.dtype)
    return w.conv2d(x, bias, stride, padding, dilation, groups).to(x.dtype)


def _embedding(func, w, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    if not isinstance(w, PackedWeight) or w.transposed or w.ndim != 2:
        return NotImplemented
    return w.rows_decoded(indices)


def _slice(func, w, dim=0, start=None, end=None, step=1):
    if not isinstance(w, PackedWeight) or w.transposed or dim % w.ndim != 0 or step != 1:
        return NotImplemented
    r0, r1, _ = slice(start, end).indices(w.rows)
    r1 = max(r0, r1)
    return w._with(**w._row_parts(slice(r0, r1)), stored_shape=(r1 - r0, *w.stored_shape[1:]))


def _select(func, w, dim, index):
    """Row ``index`` of a matrix (``w[i]``): a packed 1-D view of that row."""
    if not isinstance(w, PackedWeight) or w.transposed or w.ndim != 2 or dim % w.ndim != 0:
        return NotImplemented
    r = index % w.rows  # torch has checked the bounds
    return w._with(**w._row_parts(slice(r, r + 1)), stored_shape=(w.cols,))


def _split(func, w, sizes, dim=0):
    if not isinstance(w, PackedWeight) or w.transposed or dim % w.ndim != 0:
        return NotImplemented
    if isinstance(sizes, int):
        sizes = [min(sizes, w.rows - s) for s in range(0, w.rows, sizes)] or [0]
    ends = np.cumsum(sizes).tolist()
    starts = [0, *ends[:-1]]
    return [_slice(aten.slice.Tensor, w, 0, a, b) for a, b in zip(starts, ends, strict=True)]


def _alias(func, w, *args, **kwargs):
    return w._with() if isinstance(w, PackedWeight) else NotImplemented


def _clone(func, w, *, memory_format=None):
    if not isinstance(w, PackedWeight):
        return NotImplemented
    return w._with(**{p: getattr(w, p).clone() for p in PARTS})


def _to_copy(func, w, *, dtype=None, device=None, **kwargs):
    if not isinstance(w, PackedWeight):
        return NotImplemented
    _refuse_move(w, device, dtype)
    return _clone(func, w)


def _copy(func, dst, src, non_blocking=False):
    if not isinstance(dst, PackedWeight):
        return NotImplemented
    if not isinstance(src, PackedWeight):
        raise TypeError(
            "cannot copy a plain tensor into a nuq_rs packed weight: load a state dict of "
            "packed weights (or the file with nuq_rs.load_into), or quantize the float model"
        )
    if src.shape != dst.shape or src.dtype != dst.dtype:
        raise ValueError(
            f"cannot copy a packed weight of shape {list(src.shape)} {src.dtype} into one of "
            f"shape {list(dst.shape)} {dst.dtype}"
        )
    for p in PARTS:  # new tensors: `dst._views` makes new views
        setattr(dst, p, getattr(src, p).clone())
    dst.stored_shape, dst.bits, dst.group_size = src.stored_shape, src.bits, src.group_size
    dst.transposed, dst.int8 = src.transposed, src.int8
    return dst


#: Functions caught before torch breaks them down (``__torch_function__``).
_FUNCTIONS = {
    torch.nn.functional.linear: _linear_fn,
    torch.matmul: _matmul,
    torch.Tensor.matmul: _matmul,
    torch.Tensor.__matmul__: _matmul,
}

#: View ops: their outputs share the parts of their input, and autograd's view
#: tracking (version counters, inference mode) is set up for them.
_VIEWS = {
    aten.t.default,
    aten.transpose.int,
    aten.permute.default,
    aten.slice.Tensor,
    aten.select.int,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.detach.default,
    aten.alias.default,
}

_HANDLERS = {
    aten.t.default: _transpose,
    aten.transpose.int: _transpose,
    aten.permute.default: _transpose,
    aten.linear.default: _linear_fn,
    aten.matmul.default: _matmul,
    aten.mm.default: _mm_handler,
    aten.addmm.default: _addmm_handler,
    aten.convolution.default: _convolution,
    aten.embedding.default: _embedding,
    aten.slice.Tensor: _slice,
    aten.select.int: _select,
    aten.split.Tensor: _split,
    aten.split_with_sizes.default: _split,
    aten.detach.default: _alias,
    aten.alias.default: _alias,
    aten.clone.default: _clone,
    aten._to_copy.default: _to_copy,
    aten.copy_.default: _copy,
}


def packed_bytes(w: PackedWeight) -> int:
    """Bytes of the parts (what the weight costs in memory)."""
    return sum(math.prod(getattr(w, p).shape) * getattr(w, p).element_size() for p in PARTS)


torch.serialization.add_safe_globals([_rebuild])
