"""The ``nuq-rs`` command line (also ``python -m nuq_rs``)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from ._tensor import GRANULARITIES


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a .safetensors file or a .pt/.bin file (never unpickling code)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def _bits_for(values: list[str], names: list[str]) -> dict[str, int]:
    """--bits-for REGEX=B options as exact-name overrides."""
    out: dict[str, int] = {}
    for spec in values:
        pattern, _, bits = spec.rpartition("=")
        if not pattern or not bits.isdigit():
            raise ValueError(f"--bits-for expects REGEX=BITS, got {spec!r}")
        matched = [n for n in names if re.search(pattern, n)]
        if not matched:
            raise ValueError(f"--bits-for {spec!r} matches no tensor")
        out.update(dict.fromkeys(matched, int(bits)))
    return out


def cmd_quantize(args: argparse.Namespace) -> int:
    import nuq_rs

    if args.input is None:
        from . import _default_model as default

        sd = default.load_default_state_dict()
        print(f"No input given: quantizing the embedded default model, {default.DESCRIPTION}")
    else:
        sd = load_checkpoint(Path(args.input))
    start = time.perf_counter()
    q = nuq_rs.quantize_state_dict(
        sd,
        args.bits,
        granularity=args.granularity,
        group_size=args.group_size,
        family=args.family,
        overrides=_bits_for(args.bits_for, list(sd)),
        exclude=args.exclude,
    )
    seconds = time.perf_counter() - start
    print(q.report())
    n = sum(q[k].numel for k in q.quantized_names)
    print(f"quantized {n:,} weights in {seconds:.3f} s")
    if args.input is None:
        _print_default_accuracy(sd, q.dequantize())
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
    q = sub.add_parser("quantize", help="quantize a checkpoint and print the report")
    q.add_argument(
        "input",
        nargs="?",
        help=".safetensors or .pt/.bin state dict (default: the embedded Fashion-MNIST CNN)",
    )
    q.add_argument("--bits", type=int, default=4, help="bits per weight, 1..8 (default 4)")
    q.add_argument("--granularity", choices=GRANULARITIES, default="tensor")
    q.add_argument("--group-size", type=int, default=None, help="weights per group")
    q.add_argument("--family", choices=("auto", "gaussian", "laplace"), default="auto")
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
    q.set_defaults(func=cmd_quantize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"nuq-rs: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
