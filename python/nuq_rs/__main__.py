"""The ``nuq-rs`` command line (also ``python -m nuq_rs``)."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from ._options import CODEBOOKS, GRANULARITIES


def _bits_for(values: list[str], names: list[str]) -> dict[str, int]:
    """--bits-for REGEX=B options as exact-name overrides of the tensors ``names``
    (those quantized anyway: a matching bias or excluded tensor stays as it is)."""
    out: dict[str, int] = {}
    for spec in values:
        pattern, _, bits = spec.rpartition("=")
        if not pattern or not bits.isdigit():
            raise ValueError(f"--bits-for expects REGEX=BITS, got {spec!r}")
        matched = [n for n in names if re.search(pattern, n)]
        if not matched:
            raise ValueError(f"--bits-for {spec!r} matches no quantized tensor")
        out.update(dict.fromkeys(matched, int(bits)))
    return out


def cmd_quantize(args: argparse.Namespace) -> int:
    from ._options import QuantConfig
    from ._writer import check_destination

    output = Path(args.output) if args.output else None
    if output is not None:
        check_destination(output, args.force)
    base = QuantConfig(args.bits, args.granularity, args.group_size, args.family, args.codebook)
    if args.input is None:
        return _quantize_default(args, base, output)
    from ._budget import checkpoint_source, with_choices
    from ._checkpoint import Checkpoint
    from ._plan import CHECKPOINT, plan
    from ._stream import quantize_checkpoint, specs

    source = Path(args.input)
    if output is not None and output.resolve() == source.resolve():
        raise ValueError(f"{output}: is the input; choose another output")
    checkpoint = Checkpoint(source)
    tensors = specs(checkpoint)
    quantizable = plan(tensors, base, exclude=args.exclude, scope=CHECKPOINT).configs
    overrides = _bits_for(args.bits_for, list(quantizable))
    decided = plan(
        tensors,
        base,
        overrides,
        args.exclude,
        target_bpw=args.target_bpw,
        source=checkpoint_source(checkpoint),
        scope=CHECKPOINT,
    )
    start = time.perf_counter()
    report = quantize_checkpoint(
        checkpoint, decided.configs, output, overwrite=args.force, progress=not args.quiet
    )
    if not args.quiet:
        report = with_choices(report, decided.choices)
        _print_summary(report, time.perf_counter() - start, output)
    return 0


def _print_summary(report: Any, seconds: float, output: Path | None) -> None:
    print(report)
    n = sum(t.numel for t in report.tensors if t.quantized)
    print(f"quantized {n:,} weights in {seconds:.3f} s")
    if output is not None:
        print(f"wrote {output} ({output.stat().st_size:,} bytes)")


def _quantize_default(args: argparse.Namespace, base: Any, output: Path | None) -> int:
    """No input: the embedded Fashion-MNIST CNN, with its accuracy before and after."""
    import nuq_rs

    from . import _default_model as default
    from ._plan import plan
    from ._state_dict import specs

    sd = default.load_default_state_dict()
    if not args.quiet:
        print(f"No input given: quantizing the embedded default model, {default.DESCRIPTION}")
    start = time.perf_counter()
    q = nuq_rs.quantize_state_dict(
        sd,
        args.bits,
        granularity=args.granularity,
        group_size=args.group_size,
        family=args.family,
        codebook=args.codebook,
        overrides=_bits_for(
            args.bits_for, list(plan(specs(sd), base, exclude=args.exclude).configs)
        ),
        exclude=args.exclude,
        target_bpw=args.target_bpw,
    )
    seconds = time.perf_counter() - start
    if output is not None:
        q.save(output, overwrite=args.force)
    if not args.quiet:
        _print_summary(q.report(), seconds, output)
        _print_default_accuracy(sd, q.dequantize())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import nuq_rs

    report = nuq_rs.load(args.file).report()
    if args.json:
        print(json.dumps(_report_json(args.file, report), indent=2))
    else:
        print(report)
    return 0


def _report_json(path: str, report: Any) -> dict[str, Any]:
    def finite(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    tensors = [{k: finite(v) for k, v in t.items()} for t in report.to_dicts()]
    totals = {
        "tensors": len(report.tensors),
        "quantized": sum(t.quantized for t in report.tensors),
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "compression_ratio": report.compression_ratio,
        "bits_per_weight": report.bits_per_weight,
    }
    return {"file": str(path), "tensors": tensors, "totals": totals}


def cmd_plot(args: argparse.Namespace) -> int:
    import nuq_rs

    from . import _plot

    loaded = nuq_rs.load(args.file)
    if args.tensor is None:
        if args.source is not None:
            raise ValueError("--source needs --tensor NAME")
        _plot.plot_summary(loaded, Path(args.output))
    else:
        _plot.plot_tensor(loaded, args.tensor, Path(args.output), source=args.source)
    print(f"wrote {args.output}")
    return 0


def _print_default_accuracy(sd: dict[str, Any], quantized: dict[str, Any]) -> None:
    from . import _default_model as default

    try:
        images, labels = default.load_fashion_mnist("test")
    except FileNotFoundError as e:
        print(f"(accuracy skipped: {e})")
        return
    for label, weights in (("fp32", sd), ("quantized", quantized)):
        model = default.FashionCNN()
        model.load_state_dict(weights)
        acc = default.evaluate(model, images, labels)
        print(f"Fashion-MNIST test accuracy, {label}: {100 * acc:.2f}% ({len(labels):,} images)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nuq-rs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="quantize a checkpoint, print the report, write OUT")
    q.add_argument(
        "input",
        nargs="?",
        help=".safetensors file, sharded checkpoint folder or .pt/.bin state dict "
        "(default: the embedded Fashion-MNIST CNN)",
    )
    q.add_argument("--bits", type=int, default=4, help="bits per weight, 1..8 (default 4)")
    q.add_argument(
        "--target-bpw",
        type=float,
        default=None,
        metavar="BPW",
        help="mixed precision: each tensor's bits and granularity chosen so that all "
        "quantized tensors fit in BPW bits per weight, metadata included",
    )
    q.add_argument("--granularity", choices=GRANULARITIES, default="group")
    q.add_argument("--group-size", type=int, default=None, help="weights per group (default 64)")
    q.add_argument("--family", choices=("auto", "gaussian", "laplace"), default="auto")
    q.add_argument(
        "--codebook",
        choices=CODEBOOKS,
        default="fitted",
        help="fitted: fitted to the weights, extremes kept; lloyd-max: the paper's",
    )
    q.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="keep tensors whose name matches (repeatable)",
    )
    q.add_argument(
        "--bits-for",
        action="append",
        default=[],
        metavar="REGEX=B",
        help="other bits for matching tensors (repeatable)",
    )
    q.add_argument("-o", "--output", metavar="OUT", help="write the quantized file here")
    q.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no report")
    q.set_defaults(func=cmd_quantize)

    i = sub.add_parser("inspect", help="print the report of a quantized file")
    i.add_argument("file", help="a file written by `nuq-rs quantize -o`")
    i.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    i.set_defaults(func=cmd_inspect)

    p = sub.add_parser("plot", help="draw one tensor, or a summary of every tensor")
    p.add_argument("file", help="a file written by `nuq-rs quantize -o`")
    p.add_argument("--tensor", metavar="NAME", help="the tensor to draw (default: summary)")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="the image to write")
    p.add_argument(
        "--source",
        metavar="CHECKPOINT",
        help="the original checkpoint: histogram of the original weights, not the decoded ones",
    )
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"nuq-rs: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nuq-rs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
