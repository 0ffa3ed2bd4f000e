"""Hostile input files: each is refused with FormatError naming the file and what is
wrong, before anything the header declares is allocated, and nothing in them runs.

The first nine are the cases of issue 22 (eight refused already, the ninth, damaged
tensor data, loaded silently before checksums); the others were added with it."""

from __future__ import annotations

import json
import pickle
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import nuq_rs
from nuq_rs import FormatError
from nuq_rs._checkpoint import Checkpoint

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

DEEP = 100_000


@pytest.fixture
def saved(tmp_path) -> Path:
    g = torch.Generator().manual_seed(11)
    sd = {
        "fc.weight": torch.randn(64, 128, generator=g),
        "fc.bias": torch.randn(16, generator=g),
        "emb.weight": torch.randn(32, 64, generator=g),
    }
    path = tmp_path / "m.nuq.safetensors"
    nuq_rs.quantize_state_dict(sd, bits=4, overrides={"emb.weight": {"bits": 3}}).save(path)
    return path


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def rewrite(path: Path, header: dict | bytes, data: bytes) -> None:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def edit_header(path: Path, edit: Callable[[dict], object]) -> None:
    header, data = split(path)
    edit(header)
    rewrite(path, header, data)


def edit_entries(path: Path, edit: Callable[[list], object]) -> None:
    def on_header(header: dict) -> None:
        entries = json.loads(header["__metadata__"]["tensors"])
        edit(entries)
        header["__metadata__"]["tensors"] = json.dumps(entries)

    edit_header(path, on_header)


def refused(path: Path) -> str:
    """The message of the FormatError that loading and decoding ``path`` raises."""
    with pytest.raises(FormatError) as e:
        nuq_rs.load(path).dequantize()
    assert str(path) in str(e.value)
    return str(e.value)


# -- the nine cases of the issue ----------------------------------------------------------


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def huge_header_length(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 2**62) + path.read_bytes()[8:])


def offset_past_the_end(path: Path) -> None:
    def edit(header: dict) -> None:
        begin, end = header["fc.bias"]["data_offsets"]
        header["fc.bias"]["data_offsets"] = [begin + 10**6, end + 10**6]

    edit_header(path, edit)


def future_version(path: Path) -> None:
    edit_header(path, lambda h: h["__metadata__"].update(format_version="999"))


def dtype_lie(path: Path) -> None:
    edit_header(path, lambda h: h["fc.bias"].update(dtype="F64"))


def shape_lie(path: Path) -> None:
    edit_header(path, lambda h: h["fc.bias"].update(shape=[17]))


def deep_json(path: Path) -> None:
    _, data = split(path)
    rewrite(path, b'{"a":' + b"[" * DEEP + b"]" * DEEP + b"}", data)


def flipped_first_4k(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    raw[start : start + 4096] = bytes(255 - b for b in raw[start : start + 4096])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage, message",
    [
        (truncated, "truncated"),
        (empty, "not a safetensors file (only 0 bytes)"),
        (huge_header_length, "not a safetensors file"),
        (offset_past_the_end, "invalid offset for tensor"),
        (future_version, "version 999; this nuq-rs reads versions up to 4"),
        (dtype_lie, "invalid shape, data type, or offset for tensor"),
        (shape_lie, "invalid shape, data type, or offset for tensor"),
        (deep_json, "invalid JSON in header: recursion limit exceeded"),
        (flipped_first_4k, "is damaged: the CRC32C of"),
    ],
)
def test_the_nine_cases_of_the_issue(saved, damage, message):
    damage(saved)
    assert message in refused(saved)


# -- added with the issue -----------------------------------------------------------------


def test_overlapping_offsets(saved):
    def edit(header: dict) -> None:
        begin = header["fc.weight.packed"]["data_offsets"][0]
        header["fc.bias"]["data_offsets"] = [begin + 8, begin + 8 + 64]

    edit_header(saved, edit)
    assert "invalid offset for tensor" in refused(saved)


@pytest.mark.parametrize(
    "shape, message",
    [
        # 2^80 elements: wraps a usize / int64 product
        ([2**40, 2**40], "overflow computing buffer size"),
        # wraps to 16 elements, the real size, in 64-bit arithmetic
        ([2**64 + 16], "expected usize"),
        # no elements, so 0 bytes, but its offsets span 64
        ([0, 2**62, 2**62], "invalid shape, data type, or offset for tensor"),
        ([2**70, 0], "expected usize"),
    ],
)
def test_shape_whose_size_overflows(saved, shape, message):
    def edit(header: dict) -> None:
        end = header["fc.bias"]["data_offsets"][1]
        header["fc.bias"].update(shape=shape, data_offsets=[end - 64, end])

    edit_header(saved, edit)
    assert message in refused(saved)


def test_empty_tensor_whose_dimensions_overflow_int64(tmp_path):
    # Valid safetensors (no elements, no bytes), but no int64 holds the product of
    # its dimensions, so neither NumPy nor torch could make it.
    path = tmp_path / "e.safetensors"
    shape = [0, 2**62, 2**62]
    rewrite(path, {"e": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}, b"")
    with pytest.raises(FormatError) as e:
        Checkpoint(path)
    assert str(path) in str(e.value)
    assert f"tensor 'e': shape {shape} overflows int64" in str(e.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda e: e[0].update(shape=[2**40, 2**40]), "overflows int64"),
        (lambda e: e[0].update(shape=[0, 2**64]), "overflows int64"),
        (lambda e: e[0].update(group_size=2**70, granularity="group"), "overflows int64"),
        (lambda e: e[0].update(shape=[128, 64]), "inconsistent lengths"),  # transposed
        (lambda e: e[0].update(dtype="int8"), "bad dtype 'int8'"),
        (lambda e: e.append(dict(e[0])), "lists tensors more than once: ['fc.weight']"),
        (lambda e: e.append({"name": ["fc.bias"], "kind": "kept"}), "corrupted 'tensors'"),
        (lambda e: e[1].update(kind="quantized"), "metadata of tensor 'fc.bias' lacks"),
        (lambda e: e.pop(2), "not described by the metadata: ['emb.weight.levels'"),
        (lambda e: e.insert(0, [[[[]]]]), "corrupted 'tensors' metadata"),
    ],
)
def test_metadata_that_disagrees_with_the_tensors(saved, edit, message):
    edit_entries(saved, edit)
    assert message in refused(saved)


@pytest.mark.parametrize(
    "key, message",
    [
        ("tensors", "'tensors' metadata (ValueError('JSON nested too deeply'))"),
        ("crc32c", "corrupted 'crc32c'"),
    ],
)
def test_deeply_nested_metadata(saved, key, message):
    edit_header(saved, lambda h: h["__metadata__"].update({key: "[" * DEEP + "]" * DEEP}))
    assert message in refused(saved)


# -- memory is bounded before the header drives an allocation ------------------------------


def peak_bytes_of(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    except FormatError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_header_length_is_checked_before_it_is_read(tmp_path):
    # 90 MB of header declared (under the 100 MB cap) in a file of 200 bytes: the
    # file size refuses it before a 90 MB buffer is asked for.
    path = tmp_path / "h.nuq.safetensors"
    path.write_bytes(struct.pack("<Q", 90_000_000) + b"{" + bytes(191))
    assert "its header length field says 90000000 bytes" in refused(path)
    assert peak_bytes_of(lambda: nuq_rs.load(path)) < 5_000_000


def test_declared_sizes_are_checked_before_allocating(saved):
    # 64 GiB declared for a kept tensor: refused by its offsets, nothing allocated.
    def edit(header: dict) -> None:
        header["fc.bias"]["shape"] = [2**34]

    edit_header(saved, edit)
    assert "invalid shape, data type, or offset for tensor" in refused(saved)
    assert peak_bytes_of(lambda: nuq_rs.load(saved).dequantize()) < 5_000_000


# -- input checkpoints: sharded folders and .pt files --------------------------------------


@pytest.fixture
def sharded(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a": torch.randn(8, 8)}, str(folder / "s1.safetensors"))
    save_file({"b": torch.randn(8, 8)}, str(folder / "s2.safetensors"))
    write_index(folder, {"a": "s1.safetensors", "b": "s2.safetensors"})
    return folder


def write_index(folder: Path, weight_map: dict) -> Path:
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def test_a_good_sharded_folder_reads(sharded):
    assert list(Checkpoint(sharded)) == ["a", "b"]


@pytest.mark.parametrize(
    "shard",
    ["../outside.safetensors", "{tmp}/outside.safetensors", "sub/../../outside.safetensors"],
)
def test_index_pointing_outside_its_folder(sharded, shard):
    # a readable checkpoint does sit there: it must not be opened
    outside = sharded.parent / "outside.safetensors"
    save_file({"b": torch.randn(8, 8)}, str(outside))
    index = write_index(sharded, {"a": "s1.safetensors", "b": shard.format(tmp=sharded.parent)})
    with pytest.raises(FormatError) as e:
        Checkpoint(sharded)
    assert str(index) in str(e.value) and "is outside the folder" in str(e.value)


def test_index_pointing_at_a_missing_shard(sharded):
    index = write_index(sharded, {"a": "s1.safetensors", "b": "s3.safetensors"})
    with pytest.raises(FormatError) as e:
        Checkpoint(sharded)
    assert str(index) in str(e.value) and "shard 's3.safetensors' is missing" in str(e.value)


@pytest.mark.parametrize("shard", [7, None, ["s1.safetensors"]])
def test_index_with_a_shard_that_is_not_a_name(sharded, shard):
    write_index(sharded, {"a": "s1.safetensors", "b": shard})
    with pytest.raises(FormatError, match="not a valid index"):
        Checkpoint(sharded)


class WritesAMarker:
    """Unpickling this runs code: it writes the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("container", ["torch.save", "pickle.dump"])
def test_pt_file_with_a_pickled_object_is_refused_and_runs_nothing(tmp_path, container):
    def evil_file(name: str, marker: Path) -> Path:
        path = tmp_path / name
        obj = {"w": torch.zeros(4, 4), "extra": WritesAMarker(marker)}
        if container == "torch.save":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=2))
        return path

    # the payload is live: an unsafe load does run it
    proof = tmp_path / "proof"
    unsafe = evil_file("proof.pt", proof)
    if container == "torch.save":
        torch.load(unsafe, weights_only=False)
    else:
        pickle.loads(unsafe.read_bytes())
    assert proof.read_text() == "ran"

    marker = tmp_path / "marker"
    path = evil_file("evil.pt", marker)
    with pytest.raises(FormatError) as e:
        Checkpoint(path)
    assert str(path) in str(e.value) and "refused" in str(e.value)
    assert not marker.exists()
