"""The file format: save / load round trips, the v1 and v2 fixtures, damaged files,
atomic writes."""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nuq_rs
from nuq_rs import FormatError
from nuq_rs._writer import FileWriter

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def small_state_dict() -> dict:
    g = torch.Generator().manual_seed(3)
    return {
        "a.weight": torch.randn(16, 32, generator=g),
        "a.bias": torch.randn(16, generator=g),
        "b.weight": torch.randn(8, 64, generator=g).bfloat16(),
        "c.weight": torch.randn(12, 4, 2, generator=g).half(),
        "n": torch.tensor(5),
        "mask": torch.tensor([True, False, True]),
    }


def quantized(sd: dict | None = None) -> nuq_rs.QuantizedStateDict:
    return nuq_rs.quantize_state_dict(
        sd or small_state_dict(),
        bits=3,
        granularity="tensor",
        codebook="lloyd-max",
        overrides={"b.weight": {"group_size": 16}, "c.weight": {"granularity": "channel"}},
    )


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "m.nuq.safetensors"
    quantized().save(path)
    return path


def test_round_trip_is_exact_and_keeps_dtypes_and_order(saved):
    q = quantized()
    loaded = nuq_rs.load(saved)
    assert list(loaded) == list(q)
    assert loaded.quantized_names == q.quantized_names
    expected, got = q.dequantize(), loaded.dequantize()
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert torch.equal(got[k], v), k
    assert loaded.report() == q.report()


def test_saved_file_is_plain_safetensors(saved):
    with safe_open(str(saved), framework="numpy") as f:
        keys = set(f.keys())
        meta = f.metadata()
        assert f.get_tensor("a.weight.packed").dtype == np.uint8
        assert f.get_tensor("b.weight.scale").dtype == np.float16  # fp16 group scales
        assert f.get_tensor("a.weight.levels").shape == (8,)
    assert {"a.weight.packed", "a.weight.levels", "a.weight.loc", "a.weight.scale"} <= keys
    assert {"a.bias", "n", "mask"} <= keys and "a.weight" not in keys
    assert "b.weight.levels" not in keys  # group codebooks are implied, not stored
    assert meta["format"] == "nuq-rs" and meta["format_version"] == "4"
    assert set(json.loads(meta["crc32c"])) == keys  # a checksum for every stored tensor
    entries = {e["name"]: e for e in json.loads(meta["tensors"])}
    assert entries["b.weight"]["granularity"] == "group" and entries["b.weight"]["group_size"] == 16
    assert entries["b.weight"]["codebook"] == "implied"
    assert entries["a.weight"]["codebook"] == "stored"
    assert entries["a.bias"] == {"name": "a.bias", "kind": "kept"}
    # the pure-Rust reader of the safetensors library accepts the layout too
    from safetensors.torch import load_file

    assert load_file(str(saved))["b.weight.packed"].dtype == torch.uint8


def test_stored_bytes_match_the_storage_accounting(saved):
    q = quantized()
    with safe_open(str(saved), framework="numpy") as f:
        for name in q.quantized_names:
            parts = ("packed", "levels", "loc", "scale")
            stored = sum(
                f.get_tensor(f"{name}.{p}").nbytes for p in parts if f"{name}.{p}" in f.keys()
            )
            assert stored == q[name].storage_bytes
    # codes and one fp16 scale per group of 16, nothing else: 3 + 16 / 16 bits
    assert q["b.weight"].bits_per_weight == 4.0


def test_tensor_data_is_aligned(saved):
    raw = saved.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert (8 + n) % 8 == 0
    for key, info in header.items():
        if key != "__metadata__":
            size = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}.get(info["dtype"], 1)
            assert (8 + n + info["data_offsets"][0]) % size == 0, key


def test_loaded_tensors_feed_a_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    path = tmp_path / "model.nuq.safetensors"
    nuq_rs.quantize_state_dict(model.state_dict(), bits=4).save(path)
    loaded = nuq_rs.load(path)
    assert isinstance(loaded["0.weight"], nuq_rs.QuantizedTensor)
    assert isinstance(loaded, nuq_rs.LoadedStateDict)
    model.load_state_dict(loaded.dequantize())


def test_numpy_state_dicts_save_too(tmp_path, rng):
    sd = {"w": rng.standard_normal((8, 16)).astype(np.float32), "b": np.arange(3, dtype=np.int32)}
    path = tmp_path / "np.nuq.safetensors"
    nuq_rs.quantize_state_dict(sd, bits=2).save(path)
    out = nuq_rs.load(path).dequantize()
    assert out["b"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(
        out["w"].numpy(), nuq_rs.quantize_tensor(sd["w"], bits=2).dequantize()
    )


@given(
    rows=st.integers(1, 9),
    cols_groups=st.integers(1, 5),
    bits=st.integers(1, 8),
    granularity=st.sampled_from(["tensor", "channel", "group"]),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
)
def test_round_trip_property(tmp_path_factory, rows, cols_groups, bits, granularity, dtype):
    g = torch.Generator().manual_seed(rows * 100 + cols_groups * 10 + bits)
    w = torch.randn(rows, 4 * cols_groups, generator=g).to(getattr(torch, dtype))
    options = {"group_size": 4} if granularity == "group" else {"granularity": granularity}
    q = nuq_rs.quantize_state_dict({"w": w}, bits=bits, **options)
    path = tmp_path_factory.mktemp("rt") / "w.nuq.safetensors"
    q.save(path)
    assert torch.equal(nuq_rs.load(path).dequantize()["w"], q.dequantize()["w"])


# -- the committed version-1 fixture --------------------------------------------------------


def unpack(packed: np.ndarray, rows: int, cols: int, bits: int) -> np.ndarray:
    """Codes of an LSB-first per-row bit stream, decoded independently of the core."""
    stream = np.unpackbits(packed.reshape(rows, -1), axis=1, bitorder="little")
    codes = stream[:, : cols * bits].reshape(rows, cols, bits)
    return (codes * (1 << np.arange(bits))).sum(axis=2)


def test_v1_fixture_decodes_to_the_committed_values():
    loaded = nuq_rs.load(FIXTURES / "v1_small.nuq.safetensors")
    expected = np.load(FIXTURES / "v1_small_expected.npz")
    assert list(loaded) == ["conv.weight", "conv.bias", "fc.weight", "emb.weight", "steps"]
    decoded = loaded.dequantize()
    assert decoded["fc.weight"].dtype == torch.float16
    assert decoded["emb.weight"].dtype == torch.bfloat16
    assert decoded["steps"].item() == 7 and decoded["steps"].dtype == torch.int64
    for name in expected.files:
        np.testing.assert_array_equal(decoded[name].float().numpy(), expected[name], err_msg=name)


def test_v1_fixture_matches_an_independent_decoder():
    loaded = nuq_rs.load(FIXTURES / "v1_small.nuq.safetensors")
    for name in loaded.quantized_names:
        q = loaded[name]
        rows, cols = q.shape[0], int(np.prod(q.shape[1:]))
        codes = unpack(q.packed, rows, cols, q.bits)
        values = q.levels[codes]
        if q.config.granularity == "group":
            scale = np.repeat(q.scale.reshape(rows, -1), q.config.group_size, axis=1)
            ref = scale * values
        else:
            ref = q.scale.reshape(-1, 1) * values + q.loc.reshape(-1, 1)
        got = loaded.dequantize()[name].float().numpy().reshape(rows, cols)
        want = torch.from_numpy(ref.astype(np.float32)).to(getattr(torch, q.dtype)).float()
        np.testing.assert_array_equal(got, want.numpy(), err_msg=name)


def test_v2_fixture_decodes_to_the_committed_values():
    """Version 2 as first written (implied group codebooks) keeps decoding the same."""
    loaded = nuq_rs.load(FIXTURES / "v2_small.nuq.safetensors")
    expected = np.load(FIXTURES / "v2_small_expected.npz")
    decoded = loaded.dequantize()
    assert loaded["emb.weight"].config.group_size == 8
    assert loaded["emb.weight"].bits_per_weight == 4 + 16 / 8
    for name in expected.files:
        np.testing.assert_array_equal(decoded[name].float().numpy(), expected[name], err_msg=name)


def test_v3_fixture_decodes_to_the_committed_values():
    """Version 3 (fitted codebooks, no checksums) keeps decoding the same."""
    loaded = nuq_rs.load(FIXTURES / "v3_small.nuq.safetensors")
    expected = np.load(FIXTURES / "v3_small_expected.npz")
    assert loaded["emb.weight"].config.codebook == "fitted"
    decoded = loaded.dequantize()
    assert sorted(expected.files) == sorted(k for k in decoded if k != "steps")
    for name in expected.files:
        np.testing.assert_array_equal(decoded[name].float().numpy(), expected[name], err_msg=name)


@pytest.mark.parametrize("options", [{}, {"granularity": "channel"}, {"group_size": 20}])
def test_fitted_codebooks_round_trip(tmp_path, options):
    # The default codebook: stored levels, f16 absmax scales, no locations;
    # rows of 64 in groups of 20 leave a short last group per row.
    sd = small_state_dict()
    q = nuq_rs.quantize_state_dict(sd, bits=3, **options)
    path = tmp_path / "f.nuq.safetensors"
    q.save(path)
    with safe_open(str(path), framework="numpy") as f:
        assert f.get_tensor("b.weight.scale").dtype == np.float16
        assert f.get_tensor("b.weight.levels").shape == (8,)
        assert f.get_tensor("b.weight.loc").size == 0
        entries = {e["name"]: e for e in json.loads(f.metadata()["tensors"])}
    assert entries["b.weight"]["codebook_kind"] == "fitted"
    loaded = nuq_rs.load(path)
    assert loaded.report() == q.report()
    for k, v in q.dequantize().items():
        assert torch.equal(loaded.dequantize()[k], v), k
    for name in q.quantized_names:
        assert nuq_rs.load(path)[name].storage_bytes == q[name].storage_bytes


def test_implied_codebook_is_what_the_quantizer_used(saved):
    q = quantized()["b.weight"]
    loaded = nuq_rs.load(saved)["b.weight"]
    np.testing.assert_array_equal(loaded.levels, q.levels)
    np.testing.assert_array_equal(
        q.levels, nuq_rs._nuq_rs.implied_codebook(q.family, q.bits, q.config.group_size)
    )


def test_implied_codebook_needs_groups(saved):
    edit_metadata(saved, lambda h, entries: entries[0].update(codebook="implied"))
    assert "bad codebook 'implied' for granularity 'tensor'" in load_error(saved)
    edit_metadata(saved, lambda h, entries: entries[0].update(codebook="zip"))
    assert "bad codebook 'zip'" in load_error(saved)


# -- damaged files ---------------------------------------------------------------------------


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def rewrite(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def edit_metadata(path: Path, edit) -> None:
    header, data = split(path)
    entries = json.loads(header["__metadata__"]["tensors"])
    edit(header, entries)
    header["__metadata__"]["tensors"] = json.dumps(entries)
    rewrite(path, header, data)


def load_error(path: Path) -> str:
    with pytest.raises(FormatError) as e:
        nuq_rs.load(path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_not_safetensors(tmp_path):
    path = tmp_path / "x.nuq.safetensors"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    assert "not a safetensors file" in load_error(path)
    path.write_bytes(b"abc")
    assert "not a safetensors file" in load_error(path)


def test_truncated_files(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:-50])
    assert "truncated" in load_error(saved)
    saved.write_bytes(raw[:100])
    assert "truncated" in load_error(saved)


def test_corrupted_header_json(saved):
    raw = bytearray(saved.read_bytes())
    raw[12:16] = b"}}}{"
    saved.write_bytes(bytes(raw))
    assert "invalid JSON in header" in load_error(saved)


def test_offsets_outside_the_file(saved):
    header, data = split(saved)
    header["a.bias"]["data_offsets"] = [len(data) + 8, len(data) + 8 + 64]
    rewrite(saved, header, data)
    assert "invalid offset for tensor" in load_error(saved)


def test_offsets_that_disagree_with_the_shape(saved):
    header, data = split(saved)
    begin = header["a.bias"]["data_offsets"][0]
    header["a.bias"]["data_offsets"] = [begin, begin + 4]
    rewrite(saved, header, data)
    assert "invalid shape, data type, or offset for tensor" in load_error(saved)


def test_plain_safetensors_is_not_a_nuq_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros((2, 2), np.float32)}, str(path))
    assert "not a nuq-rs file" in load_error(path)


def test_newer_version_is_refused(saved):
    header, data = split(saved)
    header["__metadata__"]["format_version"] = "5"
    rewrite(saved, header, data)
    assert "upgrade nuq-rs" in load_error(saved)


def test_missing_tensor_of_a_quantized_entry(saved):
    # a valid safetensors file (the tensor's bytes cut out, later offsets moved
    # down) that lacks a part of a quantized tensor
    header, data = split(saved)
    begin, end = header.pop("a.weight.loc")["data_offsets"]
    for info in header.values():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if offsets and offsets[0] >= end:
            info["data_offsets"] = [offsets[0] - (end - begin), offsets[1] - (end - begin)]
    rewrite(saved, header, data[:begin] + data[end:])
    assert "'a.weight.loc' is missing" in load_error(saved)


def test_missing_metadata_field(saved):
    edit_metadata(saved, lambda h, entries: entries[0].pop("sse"))
    assert "lacks or mistypes ['sse']" in load_error(saved)


def test_inconsistent_lengths(saved):
    def more_bits(header, entries):
        entries[0]["bits"] = 4

    edit_metadata(saved, more_bits)
    assert "inconsistent lengths" in load_error(saved)


def test_tensor_not_in_metadata(saved):
    edit_metadata(saved, lambda h, entries: entries.pop(1))  # a.bias
    assert "not described by the metadata" in load_error(saved)


# -- writing ---------------------------------------------------------------------------------


def test_existing_path_is_refused_unless_overwrite(saved):
    before = saved.read_bytes()
    with pytest.raises(FileExistsError):
        quantized().save(saved)
    assert saved.read_bytes() == before
    quantized(dict(small_state_dict(), extra=torch.ones(2))).save(saved, overwrite=True)
    assert "extra" in nuq_rs.load(saved)


def test_disk_full_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = FileWriter._write_at

    def fill_up(self, offset, data):
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, offset, data)

    monkeypatch.setattr(FileWriter, "_write_at", fill_up)
    with pytest.raises(OSError) as e:
        quantized().save(tmp_path / "m.nuq.safetensors")
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_parent_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        quantized().save(tmp_path / "file" / "m.nuq.safetensors")
    assert os.listdir(tmp_path) == ["file"]


def test_name_collisions_are_refused(tmp_path):
    sd = {"w": torch.randn(4, 8), "w.packed": torch.zeros(3)}
    with pytest.raises(ValueError, match="collide"):
        nuq_rs.quantize_state_dict(sd).save(tmp_path / "c.nuq.safetensors")
    assert os.listdir(tmp_path) == []


# -- checksums -------------------------------------------------------------------------------


def flip(path: Path, key: str | None = None, count: int = 1) -> None:
    """Invert ``count`` bytes at the start of tensor ``key``'s data (of all the data
    when None), leaving the header intact."""
    header, _ = split(path)
    start = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    if key is not None:
        start += header[key]["data_offsets"][0]
    raw = bytearray(path.read_bytes())
    raw[start : start + count] = bytes(255 - b for b in raw[start : start + count])
    path.write_bytes(bytes(raw))


def test_flipped_first_4k_of_data_is_refused(tmp_path):
    # The opening case: this file used to load silently into wrong weights.
    g = torch.Generator().manual_seed(9)
    sd = {"fc.weight": torch.randn(64, 256, generator=g), "fc.bias": torch.randn(64, generator=g)}
    path = tmp_path / "m.nuq.safetensors"
    nuq_rs.quantize_state_dict(sd, bits=4).save(path)
    good = nuq_rs.load(path).dequantize()
    assert len(split(path)[1]) > 4096
    flip(path, count=4096)
    loaded = nuq_rs.load(path)  # the header is intact: tensors are checked when decoded
    assert loaded.report() == nuq_rs.load(path, verify=False).report()
    with pytest.raises(FormatError) as e:
        loaded.dequantize()
    assert str(path) in str(e.value) and "'fc.weight' is damaged" in str(e.value)
    # the documented opt-out reads the damaged data as it is
    bad = nuq_rs.load(path, verify=False).dequantize()
    assert not torch.equal(bad["fc.weight"], good["fc.weight"])


def test_every_stored_tensor_is_checked(tmp_path):
    path = tmp_path / "m.nuq.safetensors"
    quantized().save(path)
    header, _ = split(path)
    offsets = {k: v["data_offsets"] for k, v in header.items() if k != "__metadata__"}
    stored = [k for k, (begin, end) in offsets.items() if end > begin]  # not empty
    assert {"a.weight.levels", "a.weight.loc", "a.weight.scale", "b.weight.scale"} <= set(stored)
    for key in stored:
        damaged = tmp_path / "d.nuq.safetensors"
        damaged.write_bytes(path.read_bytes())
        flip(damaged, key)
        name = next(n for n in nuq_rs.load(damaged) if key == n or key.startswith(n + "."))
        loaded = nuq_rs.load(damaged)
        with pytest.raises(FormatError, match=f"tensor '{name}' is damaged.*'{key}'"):
            loaded[name]
        for other in loaded:  # the others are intact and still read
            if other != name:
                loaded[other]
        with pytest.raises(FormatError, match=f"tensor '{name}' is damaged"):
            nuq_rs.load(damaged).verify()


def test_verify_checks_untouched_tensors_and_passes_on_a_good_file(saved):
    nuq_rs.load(saved).verify()
    flip(saved, "n", count=8)
    loaded = nuq_rs.load(saved)
    loaded["a.weight"]
    with pytest.raises(FormatError, match="tensor 'n' is damaged"):
        loaded.verify()
    nuq_rs.load(saved, verify=False).verify()  # opted out: nothing is checked


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta, sums: meta.pop("crc32c"), "missing or corrupted 'crc32c'"),
        (lambda meta, sums: meta.update(crc32c="[1, 2]"), "missing or corrupted 'crc32c'"),
        (lambda meta, sums: sums.update({"a.bias": "xyz"}), "missing or corrupted 'crc32c'"),
        (lambda meta, sums: sums.pop("a.weight.scale"), "no checksum for \\['a.weight.scale'\\]"),
        (lambda meta, sums: sums.update({"ghost": "00000000"}), "absent tensors \\['ghost'\\]"),
    ],
)
def test_version_4_needs_a_checksum_for_every_tensor(saved, edit, message):
    # Damage that removes the checksums must not turn verification off.
    header, data = split(saved)
    meta = header["__metadata__"]
    sums = json.loads(meta["crc32c"])
    edit(meta, sums)
    if "crc32c" in meta and meta["crc32c"].startswith("{"):
        meta["crc32c"] = json.dumps(sums)
    rewrite(saved, header, data)
    assert re.search(message, load_error(saved))
    # a version-3 file never had checksums and loads unverified
    header, data = split(saved)
    header["__metadata__"]["format_version"] = "3"
    rewrite(saved, header, data)
    nuq_rs.load(saved).dequantize()


def test_load_gives_torch_tensors_before_torch_is_imported(saved):
    # restore() looked torch up in sys.modules only: in a fresh process that had not
    # imported torch, decoding a loaded quantized tensor raised AttributeError.
    code = (
        "import sys, nuq_rs; assert 'torch' not in sys.modules; "
        f"sd = nuq_rs.load({str(saved)!r}).dequantize(); "
        "print(type(sd['a.weight']).__name__, sd['b.weight'].dtype)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Tensor", "torch.bfloat16"]
