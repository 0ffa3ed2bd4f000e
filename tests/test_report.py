"""Report is a read-only sequence of TensorReport in state-dict order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import nuq_rs
from nuq_rs._report import Report, TensorReport

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def report() -> Report:
    g = torch.Generator().manual_seed(5)
    sd = {
        "b.weight": torch.randn(8, 16, generator=g),
        "b.bias": torch.randn(8, generator=g),
        "a.weight": torch.randn(4, 8, generator=g),
        "steps": torch.tensor(3),
    }
    return nuq_rs.quantize_state_dict(sd, bits=3).report()


NAMES = ["b.weight", "b.bias", "a.weight", "steps"]


def test_iterates_in_state_dict_order(report):
    # `for t in report` used to call __getitem__(0) and raise KeyError: 0
    assert [t.name for t in report] == NAMES
    assert all(isinstance(t, TensorReport) for t in report)
    assert len(report) == 4 and isinstance(report, Sequence)
    assert [t.name for t in reversed(report)] == NAMES[::-1]


def test_index_by_position_name_and_slice(report):
    assert [report[i].name for i in range(4)] == NAMES
    assert report[-1].name == "steps" and report[-4].name == "b.weight"
    assert report["a.weight"] is report[2]
    assert report["a.weight"].bits == 3 and report["steps"].bits is None
    part = report[1:3]
    assert isinstance(part, Report) and [t.name for t in part] == NAMES[1:3]
    assert part.bytes_before == report[1].bytes_before + report[2].bytes_before
    assert [t.name for t in report[::-1]] == NAMES[::-1]
    assert "b.bias" in report and "zzz" not in report and report[0] in report
    assert report.index(report[2]) == 2


def test_missing_keys_raise_the_usual_errors(report):
    with pytest.raises(IndexError):
        report[4]
    with pytest.raises(IndexError):
        report[-5]
    with pytest.raises(KeyError, match="zzz"):
        report["zzz"]


def test_is_read_only(report):
    with pytest.raises(TypeError):
        report[0] = report[1]  # type: ignore[index]
    with pytest.raises(AttributeError):
        report.tensors = ()  # type: ignore[misc]
    assert not hasattr(report, "append")
