"""Threads: the GIL is released, RAYON_NUM_THREADS is honoured, fork() is safe,
and results do not depend on the thread count."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import subprocess
import sys
import threading

import numpy as np

import nuq_rs

BIG = np.random.default_rng(7).standard_normal((3000, 2000)).astype(np.float32)


def test_gil_is_released_while_quantizing():
    """Another Python thread keeps running while one thread is inside Rust."""
    progress = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal progress
        while not stop.is_set():
            progress += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        seen = []
        for _ in range(3):
            before = progress
            nuq_rs.quantize_tensor(BIG, bits=4, granularity="channel")
            seen.append(progress - before)
    finally:
        stop.set()
        counter.join()
    # With the GIL held the counter could only move at the call's edges.
    assert max(seen) > 10_000, seen


def test_two_threads_quantize_concurrently():
    results: dict[int, bytes] = {}
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = nuq_rs.quantize_tensor(BIG, bits=3).packed.tobytes()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1]


SCRIPT = """
import hashlib, numpy as np, nuq_rs
x = np.random.default_rng(3).standard_normal((1500, 1024)).astype(np.float32)
x[::5] = np.random.default_rng(4).laplace(size=(300, 1024))
h = hashlib.sha256()
for kw in ({}, {"granularity": "channel"}, {"group_size": 128}):
    q = nuq_rs.quantize_tensor(x, bits=4, **kw)
    h.update(q.packed.tobytes()); h.update(q.levels.tobytes()); h.update(q.scale.tobytes())
    h.update(repr((q.d_gaussian, q.d_laplace, q.sse)).encode())
print(nuq_rs.get_num_threads(), h.hexdigest())
"""


def run_with_threads(n: int) -> tuple[str, str]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(n))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    threads, digest = out.stdout.split()
    return threads, digest


def test_rayon_num_threads_is_honoured_and_results_are_bit_identical():
    runs = {n: run_with_threads(n) for n in (1, 2, 5)}
    assert {n: int(t) for n, (t, _) in runs.items()} == {1: 1, 2: 2, 5: 5}
    assert len({d for _, d in runs.values()}) == 1


def test_set_num_threads():
    before = nuq_rs.get_num_threads()
    try:
        nuq_rs.set_num_threads(3)
        assert nuq_rs.get_num_threads() == 3
    finally:
        nuq_rs.set_num_threads(None)
    assert nuq_rs.get_num_threads() == before


def _child(queue) -> None:
    q = nuq_rs.quantize_tensor(BIG[:500], bits=4, granularity="channel")
    queue.put(hashlib.sha256(q.packed.tobytes()).hexdigest())


def test_quantizing_after_fork_does_not_hang():
    parent = nuq_rs.quantize_tensor(BIG[:500], bits=4, granularity="channel")  # pool is live
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    proc.join(timeout=120)
    hung = proc.is_alive()
    if hung:
        proc.kill()
    assert not hung, "quantization in a forked child hung"
    assert proc.exitcode == 0
    assert queue.get(timeout=5) == hashlib.sha256(parent.packed.tobytes()).hexdigest()
