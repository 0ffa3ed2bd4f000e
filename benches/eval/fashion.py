"""Case (c): the Fashion-MNIST CNN that ships with nuq-rs, on the real test set.

Weights: ``nuq_rs/data/fashion_cnn.safetensors``. Data: the 10 000 test images of
Debian's ``dataset-fashion-mnist`` (the first 2 000 with ``--quick``, or ``limit``).
Metrics: top-1 accuracy (headline) and agreement with fp32's predictions.
"""

from __future__ import annotations

import torch

from .common import Case


def load(quick: bool = False, limit: int | None = None) -> Case:
    from nuq_rs import _default_model as dm

    sd = dm.load_default_state_dict()
    images, labels = dm.load_fashion_mnist("test")
    n = limit or (2000 if quick else len(images))
    images, labels = images[:n], labels[:n]
    model = dm.FashionCNN().eval()

    @torch.inference_mode()
    def predict(state: dict[str, torch.Tensor]) -> torch.Tensor:
        model.load_state_dict(state)
        return torch.cat([model(b).argmax(1) for b in images.split(1000)])

    ref = predict(sd)

    def evaluate(state: dict[str, torch.Tensor]) -> dict[str, float]:
        pred = predict(state)
        return {
            "accuracy": float((pred == labels).float().mean()),
            "agreement": float((pred == ref).float().mean()),
        }

    fp32_model = dm.FashionCNN()
    fp32_model.load_state_dict(sd)
    return Case(
        name="fashion",
        title=f"Fashion-MNIST CNN (shipped): top-1 accuracy on {n} real test images",
        state_dict=sd,
        evaluate=evaluate,
        metric="accuracy",
        columns=("accuracy", "agreement"),
        model=fp32_model.eval(),
    )
