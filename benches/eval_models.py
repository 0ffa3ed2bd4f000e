"""The judge of fidelity: every quantization mode against RTN and NF4, on real
pretrained models and real data that ship in packages, fully offline.

Cases (``benches/eval/``, one module each):

- ``mobilenet``: torchvision MobileNetV2 (ImageNet), top-1 agreement with fp32 and
  KL on random crops of real photos;
- ``mtcnn``: the three MTCNN nets, face / non-face agreement with fp32 on lfw_subset;
- ``fashion``: the shipped Fashion-MNIST CNN, test accuracy;
- ``transformer``: paraphrase-MiniLM-L3-v2, half-sentence retrieval agreement with
  fp32 on Debian's licence texts.

Rows are the methods of ``benches/eval/methods.py`` (fp32, RTN, NF, and every nuq mode
the installed nuq_rs offers); columns are bit widths and, for methods that take one,
size budgets. Every cell is measured by loading the dequantized state dict into the
float model, and shows the bits per weight with all metadata. A second table per
case gives the mean per-tensor weight SQNR and the mean SQNR of each tensor's largest
1 % of weights. The tables go to stdout and ``OUT/eval_models.md``, the Pareto plot
(headline metric against bits per weight) to ``OUT/eval_models.png``.

    python benches/eval_models.py [--cases mobilenet,mtcnn,fashion,transformer]
                                  [--bits 3,4,6,8] [--budgets 4.25,4.5] [--quick]
                                  [--out benches/out]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval import methods as M  # noqa: E402
from eval.common import Case  # noqa: E402

CASES = ("mobilenet", "mtcnn", "fashion", "transformer")
OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Column:
    """One column: a bit width for every method, or a budget for those that take one."""

    bits: int | None = None
    target_bpw: float | None = None

    @property
    def label(self) -> str:
        return f"{self.bits} bits" if self.bits is not None else f"budget {self.target_bpw:g}"

    def applies(self, method: M.Method) -> bool:
        return method.bits if self.bits is not None else method.budget


@dataclass
class Cell:
    metrics: dict[str, float]
    bpw: float
    sqnr: float | None = None
    sqnr_top: float | None = None
    error: str | None = None


def columns(bits: list[int], budgets: list[float]) -> list[Column]:
    return [Column(bits=b) for b in bits] + [Column(target_bpw=t) for t in budgets]


def measure(case: Case, method: M.Method, col: Column, sqnr: M.WeightSQNR) -> Cell:
    """Quantize the case's weights with one method at one column and evaluate."""
    kwargs = {"bits": col.bits} if col.bits is not None else {"target_bpw": col.target_bpw}
    if method.needs_model:
        kwargs["model"] = case.model
    try:
        deq, bpw = method.run(case.state_dict, **kwargs)
        metrics = case.evaluate(deq)
    except Exception as e:  # a failing mode is a finding: report it, run the rest
        traceback.print_exc(file=sys.stderr)
        return Cell({}, math.nan, error=f"{type(e).__name__}: {e}")
    return Cell(metrics, bpw, *sqnr(deq))


def run_case(case: Case, rows: list[M.Method], cols: list[Column]) -> dict[str, dict]:
    """``{method name: {column label: Cell}}``, fp32 first."""
    fp32 = Cell(case.evaluate(case.state_dict), 32.0)
    sqnr = M.WeightSQNR(case.state_dict)
    results: dict[str, dict] = {"fp32": {c.label: fp32 for c in cols}}
    for method in rows:
        if method.needs_model and case.model is None:
            case.notes.append(f"{method.name}: skipped, this case has no module")
            continue
        results[method.name] = {}
        for col in cols:
            if col.applies(method):
                print(f"  {case.name}: {method.name}, {col.label}", file=sys.stderr, flush=True)
                results[method.name][col.label] = measure(case, method, col, sqnr)
    return results


def _fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def tables(case: Case, results: dict[str, dict], cols: list[Column]) -> list[str]:
    """The case's metric table and its SQNR table, as Markdown lines."""
    n = len(M.weight_names(case.state_dict))
    numel = sum(case.state_dict[k].numel() for k in M.weight_names(case.state_dict))
    head = "| method | " + " | ".join(c.label for c in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    lines = [
        f"### {case.title}",
        "",
        f"{n} weight tensors, {numel} weights quantized by every method. "
        f"Cells: {' / '.join(case.columns)} @ bits per weight (all metadata counted).",
        "",
        head,
        rule,
    ]
    errors = []
    for name, cells in results.items():
        row = []
        for col in cols:
            cell = cells.get(col.label)
            if cell is None:
                row.append("–")
            elif cell.error:
                row.append("error")
                errors.append(f"- {name}, {col.label}: {cell.error}")
            else:
                values = " / ".join(_fmt(cell.metrics[m]) for m in case.columns)
                row.append(f"{values} @{cell.bpw:.2f}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"- NFk g{M.BLOCK}: NF4 (QLoRA's levels) at 4 bits, QLoRA's NF-k construction at k.",
    ]
    lines += [*errors, *(f"- {note}" for note in case.notes)]
    lines += [
        "",
        "Weights: mean per-tensor SQNR / mean SQNR of each tensor's largest 1 % (dB).",
        "",
        head,
        rule,
    ]
    for name, cells in results.items():
        if name == "fp32":
            continue
        row = []
        for col in cols:
            cell = cells.get(col.label)
            ok = cell is not None and cell.sqnr is not None
            row.append(f"{cell.sqnr:.1f} / {cell.sqnr_top:.1f}" if ok else "–")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines + [""]


def pareto_png(cases: list[Case], results: dict[str, dict], path: Path) -> None:
    """Headline metric against bits per weight: one panel per case, one line per
    method (baselines dashed), fp32 as a dotted level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(2, len(cases))
    nrows = math.ceil(len(cases) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 5 * nrows), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    for ax, case in zip(axes.flat, cases, strict=False):
        res = results[case.name]
        for i, (name, cells) in enumerate(res.items()):
            if name == "fp32":
                fp32 = next(iter(cells.values())).metrics[case.metric]
                ax.axhline(fp32, color="black", linestyle=":", linewidth=1, label="fp32")
                continue
            points = sorted((c.bpw, c.metrics[case.metric]) for c in cells.values() if not c.error)
            if points:
                xs, ys = zip(*points, strict=True)
                nuq = name.startswith("nuq")
                ax.plot(
                    xs,
                    ys,
                    color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
                    linestyle="-" if nuq else "--",
                    marker="o" if nuq else "s",
                    markersize=4,
                    linewidth=1.2,
                    label=name,
                )
        ax.set_title(f"{case.name}: {case.metric}")
        ax.set_xlabel("bits per weight (all metadata counted)")
        ax.set_ylabel(case.metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(cases) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(
    case_names: list[str],
    bits: list[int],
    budgets: list[float],
    quick: bool = False,
    out: Path = OUT,
    limit: int | None = None,
) -> dict[str, dict]:
    """Run the suite; return ``{case: {method: {column: Cell}}}``; write the outputs.
    ``limit`` caps the inputs of a case (images, crops, sentences)."""
    rows, skipped = M.methods()
    cols = columns(bits, budgets)
    lines = ["## nuq-rs fidelity evaluation", ""]
    lines += [f"Rows skipped by this nuq_rs: {s}" for s in skipped] + [""]
    print("\n".join(lines), flush=True)
    cases, results = [], {}
    for name in case_names:
        module = importlib.import_module(f"eval.{name}")
        try:
            case = module.load(quick=quick, limit=limit)
        except (FileNotFoundError, ImportError) as e:
            msg = f"### {name}: skipped, {e}"
            print(msg + "\n", flush=True)
            lines += [msg, ""]
            continue
        M.NOTES.clear()
        results[name] = run_case(case, rows, cols)
        case.notes += sorted(M.NOTES)
        section = tables(case, results[name], cols)
        print("\n".join(section), flush=True)
        lines += section
        cases.append(case)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_models.md").write_text("\n".join(lines) + "\n")
    if cases:
        pareto_png(cases, results, out / "eval_models.png")
        print(f"wrote {out / 'eval_models.md'} and {out / 'eval_models.png'}")
    return results


def _list(kind: type, text: str) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument(
        "--bits", help="comma-separated bit widths, '' for none (3,4,6,8; --quick: 4,8)"
    )
    parser.add_argument(
        "--budgets", help="target_bpw columns, '' for none (4.25,4.5; --quick: 4.25)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer inputs per case, fewer default columns"
    )
    parser.add_argument("--limit", type=int, help="at most this many inputs per case")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the .md and .png")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    names = _list(str, args.cases)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; expected some of {list(CASES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    bits = args.bits if args.bits is not None else ("4,8" if args.quick else "3,4,6,8")
    bits = _list(int, bits)
    budgets = args.budgets if args.budgets is not None else ("4.25" if args.quick else "4.25,4.5")
    budgets = _list(float, budgets)
    return run(names, bits, budgets, args.quick, args.out, args.limit)


if __name__ == "__main__":
    main()
