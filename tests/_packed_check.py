"""Checks shared by the packed-weight tests: the LUT kernels' stated bound on
every call a model makes, and a model's twin with decoded float weights."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nuq_rs import PackedWeight

#: The LUT kernels' bound (README, "Running on packed weights"; tests/test_nn.py):
#: each output within this much of fp32 on the decoded weights, relative to
#: sum_j |x_j w_rj|.
LUT_BOUND = 1e-5


class Calls:
    """Every LUT linear / convolution run inside ``with calls:``, each compared
    with fp32 on the decoded weights: ``worst`` is the largest error relative
    to ``sum |x| |w|`` seen, ``count`` the number of kernel calls."""

    def __init__(self) -> None:
        self.worst, self.count = 0.0, 0
        self._patch = pytest.MonkeyPatch()

    def _record(self, got, want, bound) -> None:
        self.count += 1
        err = ((got - want).abs() / (bound + 1e-30)).max() if got.numel() else torch.tensor(0.0)
        self.worst = max(self.worst, float(err))

    def __enter__(self) -> Calls:
        linear, conv2d = PackedWeight.linear, PackedWeight.conv2d

        def checked_linear(w, x2, bias=None):
            y = linear(w, x2, bias)
            wd = _matrix(w)
            shift = 0 if bias is None else bias.float()
            self._record(y - shift, x2.float() @ wd.T, x2.float().abs() @ wd.abs().T)
            return y

        def checked_conv2d(w, x, bias, stride, padding, dilation, groups):
            y = conv2d(w, x, bias, stride, padding, dilation, groups)
            wd = _matrix(w).reshape(w.stored_shape)
            geo = (stride, padding, dilation, groups)
            want = F.conv2d(x.float(), wd, None, *geo)
            shift = 0 if bias is None else bias.float().reshape(1, -1, 1, 1)
            self._record(y - shift, want, F.conv2d(x.float().abs(), wd.abs(), None, *geo))
            return y

        self._patch.setattr(PackedWeight, "linear", checked_linear)
        self._patch.setattr(PackedWeight, "conv2d", checked_conv2d)
        return self

    def __exit__(self, *exc) -> None:
        self._patch.undo()


def _matrix(w: PackedWeight) -> torch.Tensor:
    """The stored matrix decoded (rows x cols, fp32), whatever the view."""
    plain = w._with(transposed=False, stored_shape=(w.rows, w.cols))
    return plain.dequantize().float()


def decoded_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose packed weights are plain float parameters holding
    the decoded values (tied weights stay tied)."""
    twin = copy.deepcopy(model)
    done: dict[int, nn.Parameter] = {}
    for module in twin.modules():
        for name, p in list(module._parameters.items()):
            if isinstance(p, PackedWeight):
                if id(p) not in done:
                    done[id(p)] = nn.Parameter(p.dequantize(), requires_grad=False)
                setattr(module, name, done[id(p)])
    return twin


@contextlib.contextmanager
def no_full_decode():
    """Fails the test if any packed weight is decoded whole inside the block."""

    def refuse(self):
        raise AssertionError("a packed weight was decoded whole")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(PackedWeight, "dequantize", refuse)
        yield
