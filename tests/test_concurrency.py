"""Concurrency and interruption: threads mixing quantize and LUT matmuls give the
serial results bit for bit, a fork while the pool is busy does not hang the child,
and SIGINT to ``nuq-rs quantize`` leaves nothing behind and exits with 130."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import nuq_rs
from nuq_rs import _nuq_rs

RNG = np.random.default_rng(11)
# Eight quantize jobs of different shapes, dtypes (float64 is converted on the
# way in) and options: any state shared between calls (a conversion buffer, a
# cached codebook, the pool's configuration) would mix them.
QUANTIZE_JOBS = [
    (
        RNG.standard_normal((96 + 16 * i, 160)).astype((np.float32, np.float64, np.float16)[i % 3]),
        kw,
    )
    for i, kw in enumerate(
        [
            {"bits": 4},
            {"bits": 3, "granularity": "channel"},
            {"bits": 2, "group_size": 32},
            {"bits": 5, "granularity": "tensor", "codebook": "lloyd-max"},
            {"bits": 4, "group_size": 48, "codebook": "lloyd-max"},
            {"bits": 8, "granularity": "channel", "family": "laplace"},
            {"bits": 1, "granularity": "tensor"},
            {"bits": 6, "group_size": 20},
        ]
    )
]


def _quantized_bytes(x: np.ndarray, kw: dict) -> bytes:
    q = nuq_rs.quantize_tensor(x, **kw)
    return (
        b"".join(a.tobytes() for a in (q.packed, q.levels, q.loc, q.scale))
        + repr((q.family, q.d_gaussian, q.d_laplace, q.sse, q.energy)).encode()
    )


def _matmul_jobs() -> list[tuple]:
    jobs = []
    for i, (bits, g) in enumerate([(4, 64), (3, None), (2, 32), (8, None)]):
        w = RNG.standard_normal((128, 256)).astype(np.float32)
        kw = {"group_size": g} if g else {"granularity": "channel"}
        q = nuq_rs.quantize_tensor(w, bits=bits, **kw)
        x = RNG.standard_normal((8 + 8 * i, 256)).astype(np.float32)
        bias = RNG.standard_normal(128).astype(np.float32)
        args = (x, q.packed.reshape(-1), q.levels, q.loc, q.scale, 128, 256, bits, g, bias)
        jobs.append(args)
    return jobs


def _linear_bytes(args: tuple) -> bytes:
    return _nuq_rs.linear(*args).tobytes()


def test_quantize_and_matmul_threads_match_a_serial_run():
    matmuls = _matmul_jobs()
    serial_q = [_quantized_bytes(x, kw) for x, kw in QUANTIZE_JOBS]
    serial_m = [_linear_bytes(a) for a in matmuls]
    rounds = 3
    got: dict[tuple[str, int, int], bytes] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(QUANTIZE_JOBS) + len(matmuls), timeout=60)

    def run(kind: str, i: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                if kind == "q":
                    got[kind, i, r] = _quantized_bytes(*QUANTIZE_JOBS[i])
                else:
                    for _ in range(5):  # matmuls are short: keep them going throughout
                        got[kind, i, r] = _linear_bytes(matmuls[i])
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=("q", i)) for i in range(len(QUANTIZE_JOBS))]
    threads += [threading.Thread(target=run, args=("m", i)) for i in range(len(matmuls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    for (kind, i, _), value in got.items():
        expected = serial_q[i] if kind == "q" else serial_m[i]
        assert value == expected, f"{kind}{i} differs from the serial run"
    assert len(got) == rounds * (len(QUANTIZE_JOBS) + len(matmuls))


FORK_TIMEOUT = 60


def test_quantize_in_a_child_forked_while_the_pool_is_busy():
    x, kw = QUANTIZE_JOBS[1]
    expected = hashlib.sha256(_quantized_bytes(x, kw)).digest()
    stop = threading.Event()
    busy_calls = 0

    def keep_pool_busy() -> None:
        nonlocal busy_calls
        big = RNG.standard_normal((1500, 1000)).astype(np.float32)
        while not stop.is_set():
            nuq_rs.quantize_tensor(big, bits=4, granularity="channel")
            busy_calls += 1

    worker = threading.Thread(target=keep_pool_busy)
    worker.start()
    children = []
    try:
        while busy_calls == 0:
            time.sleep(0.01)
        for _ in range(3):
            time.sleep(0.05)  # land at different points of the busy calls
            pid = os.fork()
            if pid == 0:  # the child: only this thread exists
                ok = False
                try:
                    ok = hashlib.sha256(_quantized_bytes(x, kw)).digest() == expected
                finally:
                    os._exit(0 if ok else 1)
            children.append(pid)
    finally:
        stop.set()
        worker.join()
    deadline = time.monotonic() + FORK_TIMEOUT
    statuses = {}
    while len(statuses) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    hung = [pid for pid in children if pid not in statuses]
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not hung, f"{len(hung)} forked children hung in quantize"
    assert set(statuses.values()) == {0}, statuses


def _big_checkpoint(path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    tensor = rng.standard_normal((1024, 1024)).astype(np.float32)
    # 64 tensors of 4 MB: the quantize takes about a second or more on one thread.
    save_file({f"layer{i}.weight": tensor for i in range(64)}, str(path))


def test_sigint_mid_quantize_leaves_nothing_and_exits_130(tmp_path):
    src, out = tmp_path / "in" / "big.safetensors", tmp_path / "out" / "big.nuq.safetensors"
    src.parent.mkdir()
    out.parent.mkdir()
    _big_checkpoint(src)
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "nuq_rs", "quantize", str(src), "-o", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(out.parent.iterdir()) and time.monotonic() < deadline:
            assert proc.poll() is None, "nuq-rs quantize ended before it was interrupted"
            time.sleep(0.005)
        time.sleep(0.05)  # inside the first tensors
        assert proc.poll() is None, "nuq-rs quantize ended before it was interrupted"
        assert [p.name for p in out.parent.iterdir()][0].endswith(".tmp")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "interrupted" in stderr
    assert list(out.parent.iterdir()) == []
    assert sorted(p.name for p in src.parent.iterdir()) == ["big.safetensors"]
