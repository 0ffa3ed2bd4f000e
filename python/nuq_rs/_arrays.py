"""Moving weights between torch / NumPy and the Rust core without copies where possible.

A CPU torch tensor reaches Rust through ``.detach().contiguous().numpy()``, which
shares memory. bfloat16 has no NumPy dtype: it is passed as its uint16 bit
pattern and widened in Rust. Everything else floating is converted to float32.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMPY_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}


def _torch():
    """The torch module if it has been imported, else None.

    An object can only be a torch tensor once torch is imported, so looking
    in ``sys.modules`` is enough, and the NumPy-level API never pays torch's
    import (about 3 s on the first call here) nor needs torch installed.
    """
    return sys.modules.get("torch")


def is_torch_tensor(obj: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(obj, torch.Tensor)


def is_floating(obj: Any) -> bool:
    """True for floating torch tensors and NumPy arrays."""
    if is_torch_tensor(obj):
        return obj.is_floating_point()
    return isinstance(obj, np.ndarray) and obj.dtype.kind == "f"


@dataclass(frozen=True)
class Flat:
    """A contiguous 1-D view of a weight tensor, ready for the core."""

    data: np.ndarray  # float32, float16, or uint16 holding bfloat16 bits
    bfloat16: bool
    shape: tuple[int, ...]
    dtype: str  # the original dtype's name: float32, float16, bfloat16, float64
    torch: bool  # whether the input was a torch tensor


def flatten(x: Any) -> Flat:
    """A flat view of a floating torch tensor or NumPy array (CPU copy for CUDA)."""
    if is_torch_tensor(x):
        return _flatten_torch(x)
    if isinstance(x, np.ndarray):
        return _flatten_numpy(x)
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def flatten_stored(array: np.ndarray, dtype: str) -> Flat:
    """A NumPy array read from a checkpoint file, stored as ``dtype`` (torch's
    name): bfloat16 arrives as its uint16 bits, float64 is narrowed to float32."""
    data = array.reshape(-1)
    if dtype == "float64":
        data = data.astype(np.float32)
    return Flat(data, dtype == "bfloat16", tuple(array.shape), dtype, torch=False)


def _flatten_numpy(x: np.ndarray) -> Flat:
    if x.dtype.kind != "f":
        raise TypeError(f"only floating arrays can be quantized, got dtype {x.dtype}")
    name = _NUMPY_DTYPES.get(x.dtype)
    data = np.ascontiguousarray(x if name else x.astype(np.float32)).reshape(-1)
    return Flat(data, False, tuple(x.shape), name or str(x.dtype), torch=False)


def _flatten_torch(x: Any) -> Flat:
    torch = _torch()
    if not x.is_floating_point():
        raise TypeError(f"only floating tensors can be quantized, got dtype {x.dtype}")
    t = x.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    dtype = str(t.dtype).removeprefix("torch.")
    if t.dtype == torch.bfloat16:
        data = t.contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)
        return Flat(data, True, tuple(x.shape), dtype, torch=True)
    if t.dtype not in (torch.float32, torch.float16):
        t = t.to(torch.float32)
    return Flat(t.contiguous().numpy().reshape(-1), False, tuple(x.shape), dtype, torch=True)


#: Largest finite value of the narrow dtypes. A weight at the top of the range
#: decodes through an f16 scale rounded up (``f16(absmax / q) * q > absmax``)
#: and would round to infinity: it is clipped to the dtype's maximum instead.
_FINITE_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}


def restore(values: np.ndarray, shape: tuple[int, ...], dtype: str, as_torch: bool) -> Any:
    """float32 values back in the original shape, dtype and kind (torch or NumPy)."""
    limit = _FINITE_MAX.get(dtype)
    if limit is not None:
        values = np.clip(values, -limit, limit)
    values = values.reshape(shape)
    if as_torch:
        import torch  # asked for torch tensors (a loaded file): import it if not yet

        return torch.from_numpy(values).to(getattr(torch, dtype))
    return values.astype(np.dtype(dtype), copy=False)


def nbytes(x: Any) -> int:
    """Storage of a tensor or array in bytes."""
    if is_torch_tensor(x):
        return x.numel() * x.element_size()
    return int(np.asarray(x).nbytes)
