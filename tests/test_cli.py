"""The nuq-rs command line: quantize / inspect / plot, bad input, streaming memory bound."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nuq_rs
from nuq_rs.__main__ import main
from nuq_rs._progress import Progress
from nuq_rs._writer import FileWriter

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

PYTHON_DIR = Path(nuq_rs.__file__).parent.parent


def state_dict() -> dict:
    g = torch.Generator().manual_seed(11)
    return {
        "enc.weight": torch.randn(32, 64, generator=g),
        "enc.bias": torch.randn(32, generator=g),
        "dec.weight": torch.randn(16, 32, generator=g).bfloat16(),
        "head.weight": torch.randn(8, 4, 3, 3, generator=g).half(),
        "steps": torch.tensor(3),
    }


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "in" / "model.safetensors"
    path.parent.mkdir()
    save_file(state_dict(), str(path))
    return path


@pytest.fixture
def out_dir(tmp_path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_decodes_like_in_memory(out: Path, sd: dict, bits: int = 4, **options) -> None:
    expected = nuq_rs.quantize_state_dict(sd, bits, **options).dequantize()
    got = nuq_rs.load(out).dequantize()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_quantize_safetensors(capsys, source, out_dir):
    out = out_dir / "m.nuq.safetensors"
    code, stdout, err = run(capsys, "quantize", source, "-o", out, "--bits", "3")
    assert code == 0, err
    assert "enc.weight" in stdout and "wrote" in stdout and "tensors quantized" in stdout
    assert_decodes_like_in_memory(out, state_dict(), bits=3)


def test_quiet_prints_nothing(capsys, source, out_dir):
    code, stdout, err = run(capsys, "quantize", source, "-o", out_dir / "q.nuq", "--quiet")
    assert (code, stdout, err) == (0, "", "")


def test_options_reach_the_file(capsys, source, out_dir):
    out = out_dir / "m.nuq.safetensors"
    args = ["--group-size", "16", "--bits-for", "^enc=5", "--exclude", "^head"]
    assert run(capsys, "quantize", source, "-o", out, *args)[0] == 0
    code, stdout, _ = run(capsys, "inspect", out, "--json")
    assert code == 0
    rows = {t["name"]: t for t in json.loads(stdout)["tensors"]}
    assert rows["enc.weight"]["bits"] == 5 and rows["enc.weight"]["granularity"] == "group"
    assert rows["dec.weight"]["bits"] == 4 and rows["head.weight"]["bits"] is None
    assert_decodes_like_in_memory(
        out, state_dict(), group_size=16, overrides={"enc.weight": 5}, exclude=["^head"]
    )


def test_sharded_folder(capsys, tmp_path, out_dir):
    sd = state_dict()
    folder = tmp_path / "sharded"
    folder.mkdir()
    names = list(sd)
    shards = {"model-1.safetensors": names[:2], "model-2.safetensors": names[2:]}
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(folder / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    out = out_dir / "m.nuq.safetensors"
    assert run(capsys, "quantize", folder, "-o", out, "--quiet")[0] == 0
    assert_decodes_like_in_memory(out, sd)


@pytest.mark.parametrize("wrap", [False, True])
def test_pt_input(capsys, tmp_path, out_dir, wrap):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": state_dict()} if wrap else state_dict(), path)
    out = out_dir / "m.nuq.safetensors"
    assert run(capsys, "quantize", path, "-o", out, "--quiet")[0] == 0
    assert_decodes_like_in_memory(out, state_dict())


def test_without_output_only_reports(capsys, source, out_dir):
    code, stdout, _ = run(capsys, "quantize", source)
    assert code == 0 and "dec.weight" in stdout and "wrote" not in stdout


def test_default_model_to_a_file(capsys, out_dir):
    out = out_dir / "fashion.nuq.safetensors"
    code, stdout, _ = run(capsys, "quantize", "-o", out)
    assert code == 0 and "embedded default model" in stdout and "accuracy" in stdout
    assert len(nuq_rs.load(out).quantized_names) == 4


def test_inspect_table(capsys, source, out_dir):
    out = out_dir / "m.nuq.safetensors"
    run(capsys, "quantize", source, "-o", out, "--quiet")
    code, stdout, _ = run(capsys, "inspect", out)
    assert code == 0
    assert stdout == str(nuq_rs.load(out).report()) + "\n"
    assert "3 of 5 tensors quantized" in stdout
    totals = json.loads(run(capsys, "inspect", out, "--json")[1])["totals"]
    assert totals["quantized"] == 3 and totals["bytes_after"] < totals["bytes_before"]


def test_plots(capsys, source, out_dir):
    pytest.importorskip("matplotlib")
    out = out_dir / "m.nuq.safetensors"
    run(capsys, "quantize", source, "-o", out, "--quiet", "--granularity", "channel")
    pictures = {
        "t.png": ["--tensor", "enc.weight"],
        "s.png": ["--tensor", "dec.weight", "--source", source],
        "sum.png": [],
    }
    for name, extra in pictures.items():
        code, _, err = run(capsys, "plot", out, "-o", out_dir / name, *extra)
        assert code == 0, err
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "plot", out, "--tensor", "enc.bias", "-o", out_dir / "b.png")
    assert code == 2 and "kept as it was" in err


def test_plot_without_matplotlib(capsys, source, out_dir, monkeypatch):
    out = out_dir / "m.nuq.safetensors"
    run(capsys, "quantize", source, "-o", out, "--quiet")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run(capsys, "plot", out, "-o", out_dir / "x.png")
    assert code == 2 and "nuq-rs[plot]" in err


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with Progress(2, 4_000_000, stream=tty, delay=0.0) as bar:
        bar.advance(2_000_000)
        bar.advance(2_000_000)
    assert tty.getvalue().startswith("\r[") and "2/2 tensors 4/4 MB" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    pipe = io.StringIO()
    with Progress(1, 10, stream=pipe, delay=0.0) as bar:
        bar.advance(10)
    assert pipe.getvalue() == ""
    quiet = Tty()
    with Progress(1, 10, stream=quiet, delay=0.0, enabled=False) as bar:
        bar.advance(10)
    assert quiet.getvalue() == ""


# -- bad input: a clear error, exit code 2, no partial output, input untouched ------------------


class Custom:
    """Not a tensor: torch.load(weights_only=True) must refuse to unpickle it."""


def damage(source: Path, kind: str) -> Path:
    raw = source.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    if kind == "truncated":
        source.write_bytes(raw[: len(raw) - 100])
    elif kind == "corrupted header":
        source.write_bytes(raw[:9] + b"#" + raw[10:])
    elif kind == "offsets outside":
        header = json.loads(raw[8 : 8 + n])
        begin = header["enc.bias"]["data_offsets"][0] + len(raw)
        header["enc.bias"]["data_offsets"] = [begin, begin + 128]
        text = json.dumps(header).encode().ljust(n + 64, b" ")
        source.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    elif kind == "wrong magic":
        source.write_bytes(b"\x7fELF" + raw[4:])
    elif kind == "refused pickle":
        source = source.with_suffix(".pt")
        torch.save({"w": torch.zeros(4, 4), "extra": Custom()}, source)
    return source


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "truncated"),
        ("corrupted header", "invalid JSON in header"),
        ("offsets outside", "invalid offset for tensor"),
        ("wrong magic", "not a safetensors file"),
        ("refused pickle", "weights_only=True"),
    ],
)
def test_bad_input(capsys, source, out_dir, kind, message):
    bad = damage(source, kind)
    digest = sha256(bad)
    code, stdout, err = run(capsys, "quantize", bad, "-o", out_dir / "m.nuq.safetensors")
    assert code == 2 and err.startswith("nuq-rs: error: ") and message in err, err
    assert str(bad) in err
    assert os.listdir(out_dir) == []
    assert sha256(bad) == digest


def test_existing_output_needs_force(capsys, source, out_dir):
    out = out_dir / "m.nuq.safetensors"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "quantize", source, "-o", out)
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_bytes() == b"precious" and os.listdir(out_dir) == [out.name]
    assert run(capsys, "quantize", source, "-o", out, "--force", "--quiet")[0] == 0
    assert len(nuq_rs.load(out).quantized_names) == 3


def test_a_quantized_file_is_not_an_input(capsys, source, out_dir):
    out = out_dir / "m.nuq.safetensors"
    run(capsys, "quantize", source, "-o", out, "--quiet")
    code, _, err = run(capsys, "quantize", out, "-o", out_dir / "again.nuq.safetensors")
    assert code == 2 and "already quantized" in err and os.listdir(out_dir) == [out.name]


def test_output_must_not_be_the_input(capsys, source):
    digest = sha256(source)
    code, _, err = run(capsys, "quantize", source, "-o", source, "--force")
    assert code == 2 and "is the input" in err and sha256(source) == digest


def test_unwritable_output_folder(capsys, source, tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: use a parent that is a file
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        out = blocker / "m.nuq.safetensors"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "m.nuq.safetensors"
    digest = sha256(source)
    code, _, err = run(capsys, "quantize", source, "-o", out)
    assert code == 2 and err.startswith("nuq-rs: error:")
    assert not out.exists() and sha256(source) == digest


def test_data_is_flushed_behind_the_writes(capsys, source, out_dir, monkeypatch):
    # With a flush after every tensor, the background fdatasync runs during the
    # writes (not only the fsync at the end), and the file still decodes as the
    # in-memory quantization does.
    import nuq_rs._writer as writer

    real, synced = os.fdatasync, []
    monkeypatch.setattr(writer, "FLUSH_BYTES", 1)
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    out = out_dir / "m.nuq.safetensors"
    code, _, err = run(capsys, "quantize", source, "-o", out, "--bits", "3")
    assert code == 0, err
    assert synced
    assert_decodes_like_in_memory(out, state_dict(), bits=3)


def test_disk_full(capsys, source, out_dir, monkeypatch):
    real, calls = FileWriter._write_at, []

    def fill_up(self, offset, data):
        calls.append(offset)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, offset, data)

    monkeypatch.setattr(FileWriter, "_write_at", fill_up)
    digest = sha256(source)
    code, _, err = run(capsys, "quantize", source, "-o", out_dir / "m.nuq.safetensors")
    assert code == 2 and "No space left on device" in err
    assert os.listdir(out_dir) == [] and sha256(source) == digest


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    cmd = [sys.executable, "-m", "nuq_rs", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)


def test_exit_code_of_the_real_process(source, out_dir):
    bad = damage(source, "wrong magic")
    result = cli("quantize", bad, "-o", out_dir / "m.nuq.safetensors")
    assert result.returncode == 2 and "not a safetensors file" in result.stderr
    assert os.listdir(out_dir) == []


# -- streaming: a checkpoint far larger than one tensor, in bounded memory ---------------------

ROWS, COLS, TENSORS = 4096, 8192, 12  # 12 x 128 MiB of fp32 = 1.5 GiB
PEAK_SCRIPT = """
import atexit, os, runpy, sys
def report():
    with open("/proc/self/status") as f:
        peak = [l for l in f if l.startswith("VmHWM")][0].split()[1]
    with open(os.environ["PEAK_FILE"], "w") as f:
        f.write(peak)
atexit.register(report)
sys.argv = ["nuq-rs", *sys.argv[1:]]
runpy.run_module("nuq_rs", run_name="__main__")
"""


def write_big_checkpoint(path: Path) -> int:
    """A safetensors file written in 32 MiB chunks, never held in memory."""
    tensor_bytes = ROWS * COLS * 4
    header = {
        f"layer{i}.weight": {
            "dtype": "F32",
            "shape": [ROWS, COLS],
            "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes],
        }
        for i in range(TENSORS)
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i in range(TENSORS):
            for _ in range(ROWS // 1024):
                chunk = rng.standard_normal((1024, COLS), dtype=np.float32)
                (chunk * np.float32(0.02 * (i + 1))).tofile(f)
    return tensor_bytes


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_streaming_peak_memory(tmp_path):
    if shutil.disk_usage(tmp_path).free < 4 * 2**30:
        pytest.skip("needs 4 GiB of free disk")
    src, out, peak_file = tmp_path / "big.safetensors", tmp_path / "big.nuq", tmp_path / "peak"
    try:
        largest = write_big_checkpoint(src)
        env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), PEAK_FILE=str(peak_file))
        cmd = [sys.executable, "-c", PEAK_SCRIPT, "quantize", str(src), "-o", str(out), "--quiet"]
        # The paper's method, whose SQNR on Gaussian weights is Max's table's.
        cmd += ["--granularity", "tensor", "--codebook", "lloyd-max"]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        peak = int(peak_file.read_text()) * 1024
        bound = 3 * largest + 400 * 2**20
        print(f"peak RSS {peak / 2**20:.0f} MiB for {TENSORS} x {largest / 2**20:.0f} MiB input")
        assert peak < bound, f"peak RSS {peak / 2**20:.0f} MiB >= bound {bound / 2**20:.0f} MiB"
        report = nuq_rs.load(out).report()
        assert [t.bits for t in report.tensors] == [4] * TENSORS
        assert all(20.0 < t.sqnr_db < 20.4 for t in report.tensors)  # Gaussian, 4 bits
        assert report.tensors[5].scale == pytest.approx(0.12, rel=1e-3)
    finally:
        for p in (src, out):
            p.unlink(missing_ok=True)
