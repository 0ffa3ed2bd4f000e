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

import sys

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

#: Public names that need torch, imported when first used (``import nuq_rs``
#: stays free of torch for the file and command-line paths).
_TORCH_NAMES = {"PackedWeight": "._packed", "load_into": "._model", "quantize_": "._model"}


if "torch" in sys.modules:
    # torch is here already: register PackedWeight now (cheap), so that
    # torch.load(..., weights_only=True) reads state dicts holding packed weights.
    from ._packed import PackedWeight


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        import importlib

        value = getattr(importlib.import_module(_TORCH_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dequantize(q: QuantizedTensor):
    """The decoded tensor of ``q`` (same as ``q.dequantize()``)."""
    return q.dequantize()


__all__ = [
    "KS_TOLERANCE",
    "FormatError",
    "LoadedStateDict",
    "NonFiniteError",
    "PackedWeight",
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
    "load_into",
    "quantize_",
    "quantize_state_dict",
    "quantize_tensor",
    "set_num_threads",
]
