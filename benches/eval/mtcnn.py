"""Case (b): the three pretrained MTCNN face-detection nets on real face crops.

Weights: pnet/rnet/onet from the facenet-pytorch wheel (read with
``weights_only=True``, never imported); the nets are rebuilt by ``tests/_mtcnn.py``.
Data: ``skimage.data.lfw_subset()``, 100 faces and 100 non-faces, at each net's input
size. The three state dicts are quantized as one (names prefixed by the net), so a
budget spans all three. Metrics over the 600 face / non-face decisions: agreement
with fp32 (headline) and accuracy against the labels; and the mean absolute change
of the box regression outputs against fp32.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from .common import Case

TESTS = Path(__file__).resolve().parents[2] / "tests"


def _mtcnn_module():
    spec = importlib.util.spec_from_file_location("_nuq_eval_mtcnn", TESTS / "_mtcnn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_state_dict() -> dict[str, torch.Tensor]:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps facenet-pytorch==2.6.0 (case b's weights)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return {
        f"{net}.{k}": v
        for net in ("pnet", "rnet", "onet")
        for k, v in torch.load(data / f"{net}.pt", weights_only=True).items()
    }


def load(quick: bool = False, limit: int | None = None) -> Case:
    """All 200 crops per net whatever ``quick`` and ``limit`` say: they are cheap."""
    mt = _mtcnn_module()
    sd = load_state_dict()
    nets = {name: mt.NETS[name]().eval() for name in mt.INPUT_SIZE}
    inputs = {name: mt.lfw_faces(size) for name, size in mt.INPUT_SIZE.items()}

    @torch.inference_mode()
    def run(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        faces, boxes = [], []
        for name, net in nets.items():
            net.load_state_dict(
                {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            )
            prob, box = net(inputs[name][0])[:2]
            faces.append(prob.reshape(len(prob), -1).argmax(1))
            boxes.append(box.reshape(len(box), -1))
        return torch.cat(faces), torch.cat(boxes)

    ref_face, ref_box = run(sd)
    labels = torch.cat([inputs[name][1] for name in nets])

    def evaluate(state: dict[str, torch.Tensor]) -> dict[str, float]:
        face, box = run(state)
        return {
            "agreement": float((face == ref_face).float().mean()),
            "accuracy": float((face == labels).float().mean()),
            "box MAE": float((box - ref_box).abs().mean()),
        }

    return Case(
        name="mtcnn",
        title=(
            "MTCNN pnet + rnet + onet (facenet-pytorch weights): face / non-face agreement "
            f"with fp32 on lfw_subset ({len(labels)} decisions)"
        ),
        state_dict=sd,
        evaluate=evaluate,
        metric="agreement",
        columns=("agreement", "accuracy", "box MAE"),
    )
