"""Train the embedded default model (FashionCNN) on real Fashion-MNIST.

Deterministic (fixed seed, one CPU thread), a few epochs of Adam, then writes
``python/nuq_rs/data/fashion_cnn.safetensors`` (fp32, < 1 MB) and prints the
test accuracy. Run from anywhere::

    python scripts/train_fashion_cnn.py [--epochs 6] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
MODEL_FILE = REPO / "python" / "nuq_rs" / "_default_model.py"
DEFAULT_OUT = REPO / "python" / "nuq_rs" / "data" / "fashion_cnn.safetensors"
SEED = 20241209


def _load_model_module():
    """Import _default_model by path, so training never needs the compiled package."""
    spec = importlib.util.spec_from_file_location("_nuq_default_model", MODEL_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(epochs: int, batch_size: int, lr: float) -> tuple[torch.nn.Module, float]:
    dm = _load_model_module()
    torch.manual_seed(SEED)
    x_train, y_train = dm.load_fashion_mnist("train")
    x_test, y_test = dm.load_fashion_mnist("test")
    model = dm.FashionCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        start = time.perf_counter()
        total_loss = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(idx)
        scheduler.step()
        acc = dm.evaluate(model, x_test, y_test)
        print(
            f"epoch {epoch + 1}/{epochs}: train loss {total_loss / len(order):.4f}, "
            f"test acc {acc:.4f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return model, dm.evaluate(model, x_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    model, acc = train(args.epochs, args.batch_size, args.lr)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata={"test_accuracy": f"{acc:.4f}", "seed": str(SEED)})
    size = args.out.stat().st_size
    print(f"final test accuracy {acc:.4f}; wrote {args.out} ({size} bytes)")
    if size >= 1 << 20:
        raise SystemExit(f"weights file is {size} bytes, expected < 1 MB")


if __name__ == "__main__":
    main()
