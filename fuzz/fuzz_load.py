"""Fuzz the file reader: ``nuq_rs.load(path)`` then ``.report()`` and ``.dequantize()``
on arbitrary bytes (header length, JSON header, metadata, offsets, packed data).

The only acceptable outcome besides success is :class:`nuq_rs.FormatError`
(and the ``ValueError``/``TypeError`` family of the decoder's checks); anything
else (another exception, a crash, a hang) is a bug.

    python fuzz/fuzz_load.py fuzz/corpus/load -dict=fuzz/load.dict -max_len=4096
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["nuq_rs"]):
    import nuq_rs

# One file on tmpfs when there is one, rewritten for every input.
_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
PATH = os.path.join(_DIR, f"nuq-fuzz-{os.getpid()}.nuq.safetensors")


def check(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        loaded = nuq_rs.load(PATH)
        loaded.report()
        for name in loaded:
            t = loaded[name]
            if isinstance(t, nuq_rs.QuantizedTensor):
                out = t.dequantize()
                assert tuple(out.shape) == tuple(t.shape), (out.shape, t.shape)
    except nuq_rs.FormatError:
        pass
    except nuq_rs.QuantizationError:
        # The decoder's own checks (codes out of range, lengths): a ValueError.
        pass


def main() -> None:
    atheris.Setup(sys.argv, check)
    try:
        atheris.Fuzz()
    finally:
        if os.path.exists(PATH):
            os.remove(PATH)


if __name__ == "__main__":
    main()
