"""nuq-rs: data-free, distribution-aware non-uniform post-training quantization.

For every weight tensor a Gaussian and a Laplace are fitted, the one with the
smaller Kolmogorov–Smirnov statistic is kept, and the weights are encoded with
the optimal (Lloyd–Max) quantizer of that density, bit-packed by a Rust core.

>>> import torch, nuq_rs
>>> model = torch.nn.Linear(64, 32)
>>> q = nuq_rs.quantize_state_dict(model.state_dict(), bits=4)
>>> model.load_state_dict(q.dequantize())
<All keys matched successfully>
"""

from ._format import FormatError
from ._loaded import LoadedStateDict, load
from ._nuq_rs import (
    KS_TOLERANCE,
    NonFiniteError,
    QuantizationError,
    __version__,
    get_num_threads,
    kernels,
    lloyd_max,
    set_num_threads,
)
from ._options import QuantConfig
from ._report import Report, TensorReport
from ._state_dict import QuantizedStateDict, quantize_state_dict
from ._tensor import QuantizedTensor, quantize_tensor


def dequantize(q: QuantizedTensor):
    """The decoded tensor of ``q`` (same as ``q.dequantize()``)."""
    return q.dequantize()


__all__ = [
    "KS_TOLERANCE",
    "FormatError",
    "LoadedStateDict",
    "NonFiniteError",
    "QuantConfig",
    "QuantizationError",
    "QuantizedStateDict",
    "QuantizedTensor",
    "Report",
    "TensorReport",
    "__version__",
    "dequantize",
    "get_num_threads",
    "kernels",
    "lloyd_max",
    "load",
    "quantize_state_dict",
    "quantize_tensor",
    "set_num_threads",
]
