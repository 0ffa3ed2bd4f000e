"""Smoke test of the fidelity suite (benches/eval_models.py) on the Fashion CNN case:
every method row is there, the numbers are the ones the shipped model and the
baselines are known to reach, and the Pareto plot is written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from nuq_rs import _default_model  # noqa: E402

BENCHES = Path(__file__).resolve().parents[1] / "benches"


def _suite():
    spec = importlib.util.spec_from_file_location("eval_models", BENCHES / "eval_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    if not (_default_model.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    suite = _suite()
    out = tmp_path_factory.mktemp("eval")
    results = suite.run(["fashion"], bits=[4, 8], budgets=[4.5], out=out, limit=500)
    return suite, results["fashion"], out


def test_every_method_has_a_row_with_its_columns(fashion_run):
    suite, res, _ = fashion_run
    rows, _ = suite.M.methods()
    # The Fashion case has its module, so even the rows that need one run.
    assert list(res) == ["fp32"] + [m.name for m in rows]
    for m in rows:
        want = {"4 bits", "8 bits"} if m.bits else set()
        want |= {"budget 4.5"} if m.budget else set()
        assert set(res[m.name]) == want, m.name
        assert not any(c.error for c in res[m.name].values()), m.name


def test_fp32_and_rtn_reach_what_they_should(fashion_run):
    _, res, _ = fashion_run
    fp32 = res["fp32"]["4 bits"].metrics["accuracy"]
    assert fp32 > 0.85
    rtn8 = res["RTN ch"]["8 bits"]
    assert abs(rtn8.metrics["accuracy"] - fp32) <= 0.01
    # All metadata counted: fp16 scales per row on top of the codes.
    assert 8.0 < rtn8.bpw < 8.1
    assert res["NFk g64"]["4 bits"].bpw == pytest.approx(4.25, abs=0.01)
    assert rtn8.sqnr > res["RTN ch"]["4 bits"].sqnr + 20


def test_budget_rows_hold_their_budget(fashion_run):
    _, res, _ = fashion_run
    for name, cells in res.items():
        if "budget 4.5" in cells and name != "fp32":
            assert cells["budget 4.5"].bpw <= 4.5 + 1e-9, name


def test_tables_and_plot_are_written(fashion_run):
    _, res, out = fashion_run
    text = (out / "eval_models.md").read_text()
    for name in res:
        assert f"| {name} |" in text
    png = out / "eval_models.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
