"""Threads: the GIL is released, RAYON_NUM_THREADS is honoured, fork() is safe,
and results do not depend on the thread count."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

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
    """The second call starts while the first is inside Rust, and both give the
    serial result. With the GIL held through the call the second thread could not
    even read the clock until the first call had returned."""
    import time

    serial = nuq_rs.quantize_tensor(BIG, bits=3)
    t0 = time.perf_counter()
    nuq_rs.quantize_tensor(BIG, bits=3)
    alone = time.perf_counter() - t0
    results: dict[int, bytes] = {}
    spans: dict[int, tuple[float, float]] = {}
    first_started = threading.Event()

    def work(i: int) -> None:
        if i == 1:
            first_started.wait()
            # Wake well inside the first call (it lasts `alone` or more).
            time.sleep(alone / 4)
        start = time.perf_counter()
        if i == 0:
            first_started.set()
        results[i] = nuq_rs.quantize_tensor(BIG, bits=3).packed.tobytes()
        spans[i] = (start, time.perf_counter())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1] == serial.packed.tobytes()
    (start0, end0), (start1, _) = spans[0], spans[1]
    assert start0 < start1 < end0, f"calls did not overlap: {spans} (one call: {alone:.3f} s)"


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


@contextlib.contextmanager
def _jobs_pool(threads: int) -> Iterator[None]:
    """``set_num_threads(threads)`` for a ``with`` block."""
    nuq_rs.set_num_threads(threads)
    try:
        yield
    finally:
        nuq_rs.set_num_threads(None)


def test_state_dict_jobs_overlap_in_pairs_within_the_largest_jobs_memory():
    from nuq_rs._overlap import run_in_order

    sizes = {"a": 10, "b": 3, "c": 3, "d": 4, "e": 10, "f": 2, "g": 9, "h": 1}
    lock = threading.Lock()
    state = {"held": 0, "peak": 0, "running": 0}
    # b and c fit the budget together: each waits for the other, so they
    # must be in flight at the same time (a serial run breaks the barrier).
    pair = threading.Barrier(2, timeout=30)

    def work(name: str, size: int) -> str:
        with lock:
            state["held"] += size
            state["running"] += 1
            state["peak"] = max(state["peak"], state["held"])
            assert state["running"] <= 2
        if name in ("b", "c"):
            pair.wait()
        if size >= 9:
            # Long enough for a job admitted beside it (a budget breach)
            # to start and show in the peak.
            threading.Event().wait(0.3)
        with lock:
            state["held"] -= size
            state["running"] -= 1
        return name.upper()

    with _jobs_pool(2):
        got = run_in_order(list(sizes.items()), work, lambda s: s)
    assert list(got.items()) == [(k, k.upper()) for k in sizes]
    assert state["peak"] <= max(sizes.values())


def test_state_dict_jobs_raise_the_first_error_in_order():
    from nuq_rs._overlap import run_in_order

    def work(name: str, delay: float) -> str:
        threading.Event().wait(delay)
        if name in ("second", "third"):
            raise ValueError(name)
        return name

    jobs = [("first", 0.0), ("second", 0.2), ("third", 0.0), ("fourth", 0.0)]
    for threads in (1, 2):
        with _jobs_pool(threads):
            try:
                run_in_order(jobs, work, lambda _: 1)
            except ValueError as e:
                assert str(e) == "second"
            else:
                raise AssertionError("no error raised")


def test_streamed_jobs_yield_each_result_before_later_jobs_start():
    # The streaming writer handles each result as it comes: a result held back
    # until the end (a dict built first) would keep every tensor in memory.
    from nuq_rs._overlap import in_order

    started: list[str] = []
    names = [f"t{i}" for i in range(6)]
    with _jobs_pool(2):
        for name, result in in_order(
            [(n, n) for n in names], lambda n, _: started.append(n) or n, len
        ):
            assert result == name
            # this one and at most the two jobs after it (in flight while this
            # result is handled) have started
            assert len(started) <= names.index(name) + 3


def test_one_thread_runs_state_dict_jobs_on_the_calling_thread():
    from nuq_rs._overlap import run_in_order

    with _jobs_pool(1):
        got = run_in_order(
            [("x", 1), ("y", 2)], lambda name, _: threading.current_thread().name, lambda s: s
        )
    assert set(got.values()) == {threading.current_thread().name}


def test_state_dict_results_equal_one_tensor_at_a_time():
    rng = np.random.default_rng(3)
    sd = {f"w{i}": rng.standard_normal((64 + 32 * i, 96)).astype(np.float32) for i in range(6)}
    sd["bias"] = rng.standard_normal(7).astype(np.float32)
    with _jobs_pool(2):
        q = nuq_rs.quantize_state_dict(sd, bits=3, granularity="channel")
    assert list(q) == list(sd)
    assert q["bias"] is sd["bias"]
    for name, x in sd.items():
        if x.ndim == 2:
            one = nuq_rs.quantize_tensor(x, bits=3, granularity="channel")
            assert q[name].packed.tobytes() == one.packed.tobytes()
