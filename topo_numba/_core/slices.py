"""Long compiled loops in slices of bounded duration, so that Ctrl-C acts.

Python handles a pending SIGINT only between bytecodes, i.e. when a compiled
kernel returns. The kernels of long loops (diffusion iterations, tracking
steps) therefore take a window ``[start, stop)`` of their iterations, and
`run_in_slices` calls them window after window: each window is sized from
the time the previous one took, so that one lasts about `TARGET_SECONDS`.
The kernels resume exactly where the previous window stopped, so the result
is bit-identical to one call over ``[0, total)``. Host-side only.

Python's own SIGINT handler raises `KeyboardInterrupt` in whatever Python
code runs next, and code that runs inside a garbage-collection callback
(for example a weak-reference callback of Numba's type cache) swallows it:
"Exception ignored in ...", and the interruption is lost. While a call runs
more than one window, `run_in_slices` therefore wraps that handler in one
that also records the signal, and raises `KeyboardInterrupt` itself after
the window during which a signal arrived. It does so only in the main thread
and only while SIGINT has Python's default handler: a handler of the user's
own (or SIGINT ignored) is left as it is. The previous handler is restored
before `run_in_slices` returns or raises.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# aimed duration of one slice (Ctrl-C acts within about this long)
TARGET_SECONDS = 0.2
# a slice is at most this many times longer (in iterations) than the one before
MAX_GROWTH = 8
# work (e.g. voxel updates or particle steps) of the first slice: a few tens of ms
FIRST_WORK = 1 << 23


def run_in_slices(run: Callable[[int, int], object], total: int, work: int,
                  target: float | None = None) -> None:
    """Call ``run(start, stop)`` over consecutive windows covering ``[0, total)``.

    Parameters
    ----------
    run : callable
        ``run(start, stop)`` performs iterations ``start..stop-1``.
    total : int
        Number of iterations (>= 0).
    work : int
        Work of one iteration (e.g. the voxels it updates or the particles it
        moves): the first window holds about `FIRST_WORK` / `work`
        iterations (the whole range when that is at least `total`).
    target : float, optional
        Default `TARGET_SECONDS` (read at each call).
        Aimed duration of one window, in seconds; later windows are sized
        from the duration of the one before (growing at most `MAX_GROWTH`
        times per window).
    """
    if target is None:
        target = TARGET_SECONDS
    size = max(FIRST_WORK // max(int(work), 1), 1)
    if size >= total:                  # one window: nothing to watch between windows
        if total > 0:
            run(0, total)
        return
    start = 0
    with _interrupt_watch() as interrupted:
        while start < total:
            stop = min(start + max(size, 1), total)
            t0 = time.perf_counter()
            run(start, stop)
            elapsed = time.perf_counter() - t0
            if interrupted():          # the handler's own exception was swallowed
                raise KeyboardInterrupt
            done = stop - start
            start = stop
            if elapsed <= 0.0:
                size = done * MAX_GROWTH
            else:
                size = min(int(done * target / elapsed), done * MAX_GROWTH)


@contextmanager
def _interrupt_watch() -> Iterator[Callable[[], bool]]:
    """Record SIGINT while the block runs; yield a function saying whether one came.

    The recording handler calls Python's default handler too, so the usual
    `KeyboardInterrupt` is raised as before; the record only serves when that
    exception is swallowed. Outside the main thread, or when SIGINT has a
    handler other than Python's default, nothing is installed and the
    function always says False.
    """
    hits: list[int] = []
    installed = False
    if threading.current_thread() is threading.main_thread():
        try:
            installed = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        except (ValueError, AttributeError):     # no SIGINT on this platform
            installed = False
    if installed:
        def record(signum, frame):
            hits.append(signum)
            signal.default_int_handler(signum, frame)

        signal.signal(signal.SIGINT, record)
    try:
        yield lambda: bool(hits)
    finally:
        # restore, unless someone installed another handler meanwhile
        if installed and signal.getsignal(signal.SIGINT) is record:
            signal.signal(signal.SIGINT, signal.default_int_handler)

