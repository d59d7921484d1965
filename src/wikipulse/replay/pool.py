"""Forked worker processes running one function over many tasks, results back in task order.

Why not `concurrent.futures.ProcessPoolExecutor`? A replay's critical path starts at the
fork: everything imported before it runs on one core while the other idles, and importing
multiprocessing and concurrent.futures alone cost ~0.03 s of it. The executor also reads
every result in a thread of the parent and hands it to the event loop, which costs the
parent CPU that the workers need on a two-core machine. Here the parent forks the workers
itself (nothing to import), and the transport is the plainest there is:

- tasks: the parent writes task numbers, 4 bytes each, to one pipe that every worker reads;
  a write of 4 bytes is atomic and every read takes exactly one number, so a free worker
  takes the next task (the parent keeps a bounded number of them in the pipe);
- results: a worker pickles its result into a file of a private directory (in /dev/shm
  where there is one), then writes the task number to its own pipe. Files never block a
  worker however far behind the parent is, and the parent reads each result once, in its
  own thread, when it needs it.

A worker that fails sends its traceback instead, which the parent raises; a worker that
dies (its pipe ends early) fails the replay too, rather than waiting for ever.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic, NoReturn, TypeVar

__all__ = ["ForkPool", "WorkerFailed", "reuse_freed_memory"]

T = TypeVar("T")
_OK, _FAILED = b"+", b"-"
_NUMBER = 4


class WorkerFailed(RuntimeError):
    """A worker raised, or died, while running a task."""


_PREFIX = "wikipulse-replay-"


def _result_dir() -> str:
    """A new private directory, in memory where possible (tempfile costs an import here)."""
    base = "/dev/shm"  # noqa: S108  # a private directory is made inside it, mode 0700
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        import tempfile

        base = tempfile.gettempdir()
    path = os.path.join(base, f"{_PREFIX}{os.getpid()}-{os.urandom(8).hex()}")
    os.mkdir(path, 0o700)
    return path


def _remove_orphans(base: str) -> None:
    """Remove the result directories of replays whose process is gone (killed by a signal).

    A directory is named after the process that made it; one whose process no longer exists
    can belong to nobody. Others' directories that this user may not remove are left alone.
    """
    import shutil

    for name in os.listdir(base):
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            pass  # alive, or someone else's


class ForkPool(Generic[T]):
    """`workers` forked processes running `run(*task)` for each task, at most `ahead` queued.

    The workers are forked when this is made, so the caller makes it before starting any
    thread or event loop (a fork copies only the calling thread). They run `niceness` below
    the caller's priority (os.nice): a caller that merges their results serially then gets a
    core whenever it has work, rather than falling behind and finishing alone after them.
    """

    def __init__(
        self,
        run: Callable[..., T],
        tasks: Sequence[tuple[Any, ...]],
        workers: int,
        ahead: int,
        niceness: int = 0,
    ) -> None:
        self._run = run
        self._niceness = niceness
        self._tasks = tasks
        self._dir = _result_dir()
        self._next = 0  # the next task to queue
        self._taken = 0  # tasks whose result the caller has taken
        self._task_r, self._task_w = os.pipe()
        pipes = [os.pipe() for _ in range(max(workers, 1))]
        self._pids: list[int] = []
        for _, own_w in pipes:
            pid = os.fork()
            if pid == 0:  # pragma: no cover  # the child; coverage does not follow it
                for r, w in pipes:
                    os.close(r)
                    if w != own_w:
                        os.close(w)
                os.close(self._task_w)
                self._work(own_w)
            self._pids.append(pid)
        os.close(self._task_r)
        for _, w in pipes:
            os.close(w)
        self._done_r = [r for r, _ in pipes]
        self.queue(ahead)

    def _work(self, done_w: int) -> NoReturn:
        code = 0
        with contextlib.suppress(OSError):  # only lowers its own priority, which is always allowed
            os.nice(self._niceness)
        try:
            while token := os.read(self._task_r, _NUMBER):
                number = int.from_bytes(token, "little")
                result: object
                try:
                    result, status = self._run(*self._tasks[number]), _OK
                except Exception:
                    import traceback

                    result, status = traceback.format_exc(), _FAILED
                with open(os.path.join(self._dir, str(number)), "wb") as f:
                    pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.write(done_w, status + token)
        except BaseException:  # an interrupt, a full disk: the parent sees the pipe end
            code = 1
        os._exit(code)

    def queue(self, ahead: int) -> None:
        """Put tasks in the pipe until `ahead` are queued beyond those already taken."""
        upto = min(len(self._tasks), self._taken + ahead)
        if self._next < upto and self._task_w >= 0:
            os.write(
                self._task_w,
                b"".join(n.to_bytes(_NUMBER, "little") for n in range(self._next, upto)),
            )
            self._next = upto
        if self._next == len(self._tasks) and self._task_w >= 0:
            os.close(self._task_w)  # no more tasks: each worker ends after its last one
            self._task_w = -1

    async def results(self, ahead: int) -> AsyncIterator[T]:
        """The tasks' results in task order; after each one, `ahead` tasks are kept queued."""
        import asyncio

        loop = asyncio.get_running_loop()
        ready: dict[int, bytes] = {}
        ended: set[int] = set()
        wake: asyncio.Future[None] | None = None
        partial = dict.fromkeys(self._done_r, b"")

        def readable(fd: int) -> None:
            data = os.read(fd, 4096)
            if not data:
                ended.add(fd)
                loop.remove_reader(fd)
            data = partial[fd] + data
            whole = len(data) - len(data) % (1 + _NUMBER)
            for at in range(0, whole, 1 + _NUMBER):
                number = int.from_bytes(data[at + 1 : at + 1 + _NUMBER], "little")
                ready[number] = data[at : at + 1]
            partial[fd] = data[whole:]
            if wake is not None and not wake.done():
                wake.set_result(None)

        for fd in self._done_r:
            loop.add_reader(fd, readable, fd)
        try:
            for number in range(len(self._tasks)):
                while number not in ready:
                    if ended and (self._task_w >= 0 or len(ended) == len(self._done_r)):
                        raise WorkerFailed("a replay worker ended before its task was done")
                    wake = loop.create_future()
                    await wake
                result = self._load(number)
                if ready.pop(number) != _OK:
                    raise WorkerFailed(f"a replay worker failed:\n{result}")
                self._taken = number + 1
                self.queue(ahead)
                yield result
        finally:
            for fd in self._done_r:
                if fd not in ended:
                    loop.remove_reader(fd)

    def _load(self, number: int) -> T:
        # A file in memory (or the page cache) that its worker has closed: reading it does
        # not wait on anything.
        path = os.path.join(self._dir, str(number))
        with open(path, "rb") as f:
            result: T = pickle.load(f)  # noqa: S301  # written by our own worker
        os.unlink(path)
        return result

    def close(self) -> None:
        """Stop the workers (dropping tasks not yet done) and remove their files."""
        if self._task_w >= 0:
            os.close(self._task_w)
            self._task_w = -1
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self._pids:
            os.waitpid(pid, 0)
        self._pids = []
        for fd in self._done_r:
            os.close(fd)
        self._done_r = []
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
        # After the replay, not before the fork: it is not on the critical path here.
        _remove_orphans(os.path.dirname(self._dir))


#: glibc's `mallopt` parameters: the free memory at the top of the heap above which it is
#: given back to the system, and the size from which blocks are memory-mapped.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_freed_memory(threshold: int = 16 << 20) -> bool:
    """Fix glibc's mmap and trim thresholds at `threshold`, so that blocks below it are taken
    from the heap and freed memory (up to that much) is kept for the next ones.

    A replay allocates and frees blocks of 0.1-10 MB all the time: a range's results and
    lists, the C extension's tables and output buffers, SQLite's pages. glibc maps blocks
    from 128 KiB on and unmaps them when freed (its dynamic threshold only follows blocks it
    has seen freed), so each was faulted in page by page and zeroed again: 228,000 page
    faults in a replay of 500,000 events into SQLite, and 0.25 of its 2.6 CPU seconds.
    At 16 MiB: 98,000 faults (the range maps' own pages), replay into SQLite 1.36-1.38 s
    instead of 1.40-1.46, into memory 0.53-0.54 s instead of 0.54-0.61, peak RSS 248 and
    75 MB instead of 214 and 68 (measured 2026-12-02 on the 2-core VM).
    Elsewhere (another C library, no `mallopt`) nothing changes; returns whether it applied.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, threshold)) and bool(
        mallopt(_M_MMAP_THRESHOLD, threshold)
    )
