"""Type stub of the compiled extension ``nuq_rs._nuq_rs``."""

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "QuantizationError",
    "NonFiniteError",
    "quantize",
    "dequantize",
    "lloyd_max",
    "implied_codebook",
    "conv2d",
    "linear",
    "set_num_threads",
    "get_num_threads",
    "kernels",
    "__version__",
    "KS_TOLERANCE",
]

__version__: str
# Largest distance of a reported KS statistic from the exact one.
KS_TOLERANCE: float

class QuantizationError(ValueError): ...
class NonFiniteError(QuantizationError): ...

def quantize(
    data: npt.NDArray[Any],
    rows: int,
    cols: int,
    bits: int,
    granularity: str = "tensor",
    group_size: int | None = None,
    family: str = "auto",
    bfloat16: bool = False,
    codebook: str = "fitted",
) -> dict[str, Any]: ...
def dequantize(
    packed: npt.NDArray[np.uint8],
    levels: npt.NDArray[np.float32],
    loc: npt.NDArray[np.float32],
    scale: npt.NDArray[np.float32],
    rows: int,
    cols: int,
    bits: int,
    group_size: int | None = None,
) -> npt.NDArray[np.float32]: ...
def linear(
    x: npt.NDArray[np.float32],
    packed: npt.NDArray[np.uint8],
    levels: npt.NDArray[np.float32],
    loc: npt.NDArray[np.float32],
    scale: npt.NDArray[np.float32],
    rows: int,
    cols: int,
    bits: int,
    group_size: int | None = None,
    bias: npt.NDArray[np.float32] | None = None,
    int8_activations: bool = False,
) -> npt.NDArray[np.float32]: ...
def conv2d(
    x: npt.NDArray[np.float32],
    packed: npt.NDArray[np.uint8],
    levels: npt.NDArray[np.float32],
    loc: npt.NDArray[np.float32],
    scale: npt.NDArray[np.float32],
    rows: int,
    cols: int,
    bits: int,
    group_size: int | None,
    bias: npt.NDArray[np.float32] | None,
    geometry: tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], int],
) -> npt.NDArray[np.float32]: ...
def lloyd_max(
    family: str, bits: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]: ...
def implied_codebook(family: str, bits: int, group_size: int) -> npt.NDArray[np.float32]: ...
def set_num_threads(threads: int | None = None) -> None: ...
def get_num_threads() -> int: ...
def kernels() -> dict[str, Any]: ...
