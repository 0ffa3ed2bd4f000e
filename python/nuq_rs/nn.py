"""Layers that run on packed weights: :class:`NuqLinear`, :class:`NuqConv2d` and
:func:`quantize_model`, which swaps them into a model. :func:`nuq_rs.quantize_`
does the same in place without swapping modules (only the weights change, into
:class:`nuq_rs.PackedWeight`, so subclasses keep their ``forward`` and tied or
directly read weights keep working); both share one planner, budget and bias
correction (``nuq_rs._model.prepare``) and the same kernels.

The weights stay packed (codes, codebook, locations and scales are buffers, so
``state_dict()`` stays small); the forward pass runs the Rust lookup-table matmul,
which decodes codes in registers and never builds the fp32 weight matrix.
Inference only: the layers have no gradient.

``NuqLinear(..., activations="int8")`` (also ``from_float`` and
``quantize_model``) opts into int8 activations: for batches of more than 16
rows on a CPU with AVX512-VNNI, each row of the input is rounded to int8 per
block of columns (the weight group, else 128) and the codebook to 255 steps,
and the products run as integer dot products (1.4x to 2.7x faster than the
fp32 kernel at 64 rows on this project's 2-core machine). It is an
approximation: the error bound per output is stated in
``nuq_core::lut::linear_int8`` and tested (under ``NUQ_ISA=scalar`` its scalar
reference runs on any CPU); elsewhere, and for group sizes that are not a
multiple of 4, the exact fp32 kernel runs.
Convolutions always run in fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ._model import apply_correction, find_targets, prepare
from ._nuq_rs import conv2d as _conv2d
from ._nuq_rs import dequantize as _dequantize
from ._nuq_rs import linear as _linear
from ._options import QuantConfig, check_activations
from ._plan import MODEL
from ._report import Report
from ._tensor import QuantizedTensor, matrix_shape, quantize_with
from ._views import NumpyViews, bias_array, f32_array

__all__ = ["NuqConv2d", "NuqLinear", "quantize_model"]


class _Packed(nn.Module):
    """Buffers of one packed weight matrix and the call into the LUT kernel."""

    def _store(self, q: QuantizedTensor) -> None:
        self.bits = q.bits
        self.group_size = q.config.group_size
        self.weight_shape = q.shape
        for name in ("packed", "levels", "loc", "scale"):
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(getattr(q, name))))
        self._views, self._bias_views = NumpyViews(), NumpyViews()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_views", NumpyViews())  # layers pickled before the caches
        self.__dict__.setdefault("_bias_views", NumpyViews())

    def _arrays(self) -> tuple[np.ndarray, ...]:
        """The buffers as NumPy arrays for the kernels (kept between calls)."""
        b = self._buffers
        return self._views.of((b["packed"], b["levels"], b["loc"], b["scale"]))

    def _bias(self) -> torch.Tensor | None:
        """``self.bias`` (a buffer unless replaced), without ``Module.__getattr__``."""
        return self._buffers["bias"] if "bias" in self._buffers else self.bias

    def _decoded_weight(self) -> torch.Tensor:
        """The fp32 weight decoded from the buffers (so a loaded state dict counts)."""
        rows, cols = matrix_shape(self.weight_shape)
        parts = (self.packed, self.levels, self.loc, self.scale)
        w = _dequantize(*(p.numpy() for p in parts), rows, cols, self.bits, self.group_size)
        return torch.from_numpy(w).reshape(self.weight_shape)

    def _matmul(self, x2: torch.Tensor, bias: torch.Tensor | None, int8: bool) -> torch.Tensor:
        """``x2 @ W^T (+ bias)`` for a CPU matrix ``x2`` of ``in_features`` columns
        (computed in float32; ``int8``: int8 activations, see the module docstring)."""
        rows, cols = matrix_shape(self.weight_shape)
        y = _linear(
            f32_array(x2),
            *self._arrays(),
            rows,
            cols,
            self.bits,
            self.group_size,
            bias_array(self._bias_views, bias),
            int8,
        )
        return torch.from_numpy(y)

    @staticmethod
    def _prepare(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError(
                "nuq_rs layers are inference-only (packed weights have no gradient): "
                "call the model under torch.no_grad() or torch.inference_mode()"
            )
        if not x.is_cpu:
            raise ValueError(
                f"nuq_rs layers run on the CPU; got an input on {x.device}: move it with .cpu()"
            )
        return x


class NuqLinear(_Packed):
    """A :class:`torch.nn.Linear` whose weight is stored packed and multiplied by LUT.

    >>> import torch, nuq_rs.nn
    >>> lin = torch.nn.Linear(64, 16)
    >>> q = nuq_rs.nn.NuqLinear.from_float(lin, bits=8)
    >>> with torch.no_grad():
    ...     err = (q(torch.ones(2, 64)) - lin(torch.ones(2, 64))).abs().max().item()
    >>> err < 0.05
    True

    ``activations="int8"`` (or setting ``q.activations``) trades a bounded
    error for speed on large batches; see the module docstring.
    """

    def __init__(
        self, q: QuantizedTensor, bias: torch.Tensor | None, activations: str = "fp32"
    ) -> None:
        super().__init__()
        self.activations = check_activations(activations)
        self.out_features, self.in_features = matrix_shape(q.shape)
        self._store(q)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_float(
        cls, module: nn.Linear, bits: int = 4, *, activations: str = "fp32", **options: Any
    ) -> NuqLinear:
        """Quantize ``module``'s weight (``granularity``, ``group_size``, ``family``)."""
        check_activations(activations)
        q = quantize_with(module.weight, QuantConfig(bits, **options), "weight")
        return cls(q, module.bias, activations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[-1]} features but the layer expects {self.in_features}"
            )
        activations = self.activations
        int8 = activations == "int8"
        if not int8 and activations != "fp32":
            check_activations(activations)
        if x.ndim == 2:
            y = self._matmul(x, self._bias(), int8)
        else:
            y = self._matmul(x.reshape(-1, self.in_features), self._bias(), int8)
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if x.dtype is torch.float32 else y.to(x.dtype)

    def dequantize(self) -> nn.Linear:
        """A float :class:`torch.nn.Linear` with the decoded weight."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self._decoded_weight())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"
        return text + (", activations=int8" if self.activations == "int8" else "")


class NuqConv2d(_Packed):
    """A :class:`torch.nn.Conv2d` on packed weights (implicit im2col into the LUT
    matmul), with stride, padding, dilation and groups (depthwise included)."""

    def __init__(self, q: QuantizedTensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("NuqConv2d supports zero padding given as numbers only")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups
        self._store(q)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_float(cls, module: nn.Conv2d, bits: int = 4, **options: Any) -> NuqConv2d:
        """Quantize ``module``'s weight (``granularity``, ``group_size``, ``family``)."""
        q = quantize_with(module.weight, QuantConfig(bits, **options), "weight")
        return cls(q, module.bias, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input [batch, {self.in_channels}, height, width], got {list(x.shape)}"
            )
        rows, cols = matrix_shape(self.weight_shape)
        y = _conv2d(
            f32_array(x),
            *self._arrays(),
            rows,
            cols,
            self.bits,
            self.group_size,
            bias_array(self._bias_views, self._bias()),
            self._geometry(),
        )
        y = torch.from_numpy(y)
        return y if x.dtype is torch.float32 else y.to(x.dtype)

    def _geometry(self) -> tuple:
        """``(kernel, stride, padding, dilation, groups)`` as the kernel takes it."""
        return (
            tuple(self.kernel_size),
            tuple(self.stride),
            tuple(self.padding),
            tuple(self.dilation),
            self.groups,
        )

    def dequantize(self) -> nn.Conv2d:
        """A float :class:`torch.nn.Conv2d` with the decoded weight."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias=self.bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(self._decoded_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, bits={self.bits}"
        )


def quantize_model(
    model: nn.Module,
    bits: int = 4,
    *,
    granularity: str = "group",
    group_size: int | None = None,
    family: str = "auto",
    codebook: str = "fitted",
    overrides: Mapping[str, Any] | None = None,
    exclude: list[str] | tuple[str, ...] | None = None,
    inplace: bool = False,
    activations: str = "fp32",
    target_bpw: float | None = None,
    bias_correction: bool = True,
) -> tuple[nn.Module, Report]:
    """Replace every ``nn.Linear`` / ``nn.Conv2d`` (subclasses included) by its
    packed LUT twin. ``overrides`` and ``exclude`` use module names
    (``"features.0"``); ``activations="int8"`` sets that option on every
    ``NuqLinear`` (see the module docstring); returns the model and the
    quantization report. ``target_bpw`` chooses each layer's bits and granularity
    to that size budget, as :func:`nuq_rs.quantize_state_dict` does (BatchNorm
    gains from the model's state dict; ``overrides`` stay fixed and count).

    ``bias_correction`` (on by default): data-free bias correction from the
    BatchNorm statistics, where a ``torch.fx`` trace shows each layer's input
    mean (see :func:`nuq_rs.quantize_state_dict`'s ``model``); the returned
    model's ``nuq_bias_correction.rows`` says per layer what was corrected or
    why not. An untraceable model is left uncorrected, with the reason there.

    >>> import torch, nuq_rs.nn
    >>> net = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(),
    ...                           torch.nn.Linear(32, 4))
    >>> qnet, report = nuq_rs.nn.quantize_model(net, bits=4, exclude=["^2$"])
    >>> [type(m).__name__ for m in qnet]
    ['NuqLinear', 'ReLU', 'Linear']
    """
    check_activations(activations)
    base = QuantConfig(bits, granularity, group_size, family, codebook)
    targets = find_targets(model, legacy=True, strict=False)
    prepared = prepare(
        model,
        targets,
        base,
        overrides=overrides,
        exclude=exclude,
        target_bpw=target_bpw,
        bias_correction=bias_correction,
        scope=MODEL,
    )
    target = model if inplace else copy.deepcopy(model)
    for name, q in prepared.quantized.items():
        layer = target.get_submodule(name)
        new = (
            NuqLinear(q, layer.bias, activations)
            if isinstance(layer, nn.Linear)
            else NuqConv2d(q, layer.bias, layer)
        )
        _set_submodule(target, name, new)
    apply_correction(target, prepared.correction)
    return target, prepared.report()


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
