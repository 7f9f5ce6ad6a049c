"""Threads of the parallel CPU kernels: which threading layer runs them and
how many threads one call uses.

Threading layer
---------------
Numba runs ``parallel=True`` kernels on one of three threading layers and
picks the first that loads from ``tbb, omp, workqueue``. In a PyPI
installation ``omp`` is GNU OpenMP, which kills every process forked after
a parallel call ("Terminating: fork() called from a process already using
GNU OpenMP", the default start method of multiprocessing and of
``torch.utils.data.DataLoader`` on Linux); ``workqueue`` survives fork but
aborts when two Python threads run kernels at once; ``tbb`` (Intel oneTBB)
is both fork-safe and thread-safe, and it does not collapse when the cores
are shared (docs/training.md has the measurements). The ``tbb`` wheel is a
dependency, but pip puts its library in ``<prefix>/lib``, where the dynamic
loader does not look, so Numba never finds it by itself.

Two steps make Numba find and choose it, and respect the user's choice:

* `load_tbb`, when the CPU backend is imported (before any kernel can run,
  without importing Numba): loads the ``tbb`` wheel's library by its path,
  unless ``NUMBA_THREADING_LAYER`` asks for ``omp`` or ``workqueue``.
  Loading a library changes no setting: Numba's own default order
  (``tbb, omp, workqueue``) then picks TBB wherever a kernel starts first.
* `ensure_threading_layer`, once, on the first call that enters
  `threads_for`: does nothing when Numba's layer is already running or the
  user chose one (``NUMBA_THREADING_LAYER``,
  ``NUMBA_THREADING_LAYER_PRIORITY``, or ``numba.config.THREADING_LAYER``
  already changed); otherwise, only where no usable TBB exists (e.g.
  aarch64, which has no ``tbb`` wheel), sets ``numba.config.THREADING_LAYER
  = "workqueue"``, the fork-safe layer. Calls from several Python threads
  then run one at a time (a lock in `threads_for`): workqueue is not
  thread-safe.

Thread count of one call
------------------------
`threads_for` wraps every call of the parallel kernels; the count it sets is
Numba's per-thread count, restored on exit, so nothing global changes. The
first rule that applies decides (`call_threads`):

1. inside ``with thread_limit(n):`` (this thread): at most ``n``;
2. after ``numba.set_num_threads(k)`` on this thread, ``k`` below the pool
   size: ``k`` (``k`` equal to it cannot be told from the default);
3. in a worker process (a ``multiprocessing`` child, whatever its start
   method: ``DataLoader`` workers, ``Pool`` and ``ProcessPoolExecutor``
   workers; or a ``torch.utils.data`` worker): 1, as torch does, so that
   ``num_workers`` processes do not each start a thread per core;
4. otherwise Numba's threads (``numba.config.NUMBA_NUM_THREADS``), less
   the cores other runnable tasks hold at the moment of the call
   (`free_cores`, from the kernel's count of runnable tasks, less this
   process's own native threads, `pool_runnable`; for calls from
   `RESAMPLE_FROM_VOXELS` on, the most free cores of a few readings
   within about 2 ms, so that a task runnable for a moment does not decide
   a long call): on shared
   cores the iterative kernels, which meet at a barrier every iteration,
   run slower on several threads than on one, because each barrier waits
   for the thread that lost its core.

Inputs below `SERIAL_BELOW_VOXELS` run on the calling thread only: starting
a parallel region costs microseconds on an idle machine but milliseconds
when the cores are shared.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import numbers
import os
import sys
import threading
import time

# below this many voxels a call runs single-threaded
SERIAL_BELOW_VOXELS = 1 << 16
# from this many voxels on (calls of 50 ms and more), a count of runnable tasks
# that leaves fewer cores than the pool is read again, RESAMPLES times
# RESAMPLE_S apart, and the most free cores seen decide: a kernel thread that
# ran for a moment at the start must not put a call of minutes on one core
RESAMPLE_FROM_VOXELS = 1 << 23
RESAMPLES = 4
RESAMPLE_S = 0.0005

# Numba's TBB layer needs TBB_INTERFACE_VERSION >= 12060 (oneTBB 2021.6)
TBB_MIN_INTERFACE = 12060
_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}

_log = logging.getLogger(__name__)

# the innermost thread_limit of the running thread (or task); None outside one
_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "topo_numba_thread_limit", default=None)


# --------------------------------------------------------------------------
# the threading layer
# --------------------------------------------------------------------------

def _running_layer() -> str | None:
    """Numba's threading layer if it is already running, else None."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized."
        return None


def user_layer_choice() -> str | None:
    """The threading layer the user asked Numba for, or None if they did not.

    A choice is ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY``
    in the environment (the latter reported as ``"default"``: Numba's search
    in the user's order), or ``numba.config.THREADING_LAYER`` set to anything
    but ``"default"``.
    """
    import numba

    configured = str(numba.config.THREADING_LAYER).strip().lower()
    if configured != "default":
        return configured
    env = os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower()
    if env:
        return env
    if os.environ.get("NUMBA_THREADING_LAYER_PRIORITY", "").strip():
        return "default"
    return None


def _tbb_candidates(deep: bool):
    """Where pip puts the ``tbb`` wheel's library: ``<prefix>/lib`` (virtual
    environments, system and ``--prefix`` installs), ``<user base>/lib``
    (``--user``); with `deep`, wherever the installed distribution's record says."""
    import site

    name = _TBB_LIBRARY[sys.platform]
    bases = [sys.prefix, site.USER_BASE or site.getuserbase()]
    for base in bases:
        yield os.path.join(base, "lib", name)
    if deep:
        from importlib import metadata

        try:
            files = metadata.distribution("tbb").files or ()
        except metadata.PackageNotFoundError:
            return
        for f in files:
            if f.name == name:
                yield str(f.locate())


def _load_tbb_library(deep: bool = False) -> bool:
    """Load libtbb: by name when the loader finds one (conda, system,
    ``LD_LIBRARY_PATH``), else the ``tbb`` wheel's copy by its path. The loader
    then resolves Numba's ``libtbb`` dependency to it (same soname)."""
    import ctypes

    name = _TBB_LIBRARY.get(sys.platform)
    if name is None:
        return False
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        pass
    for path in _tbb_candidates(deep):
        if os.path.exists(path):
            try:
                ctypes.CDLL(path)
                return True
            except OSError as exc:
                _log.debug("could not load %s: %s", path, exc)
    return False


def load_tbb() -> None:
    """Make the ``tbb`` wheel's library loadable for Numba (no Numba import).

    Skipped when ``NUMBA_THREADING_LAYER`` (environment, or
    ``numba.config`` if Numba is imported) asks for ``omp`` or
    ``workqueue``. Loading it changes no setting.
    """
    numba = sys.modules.get("numba")
    configured = str(getattr(getattr(numba, "config", None), "THREADING_LAYER", "default"))
    env = os.environ.get("NUMBA_THREADING_LAYER", "")
    if {configured.strip().lower(), env.strip().lower()} & {"omp", "workqueue"}:
        return
    _load_tbb_library()


def _tbb_usable() -> bool:
    """Numba's TBB layer would load: a new enough libtbb and its extension."""
    import ctypes
    import importlib

    name = _TBB_LIBRARY.get(sys.platform)
    if name is None:
        return False
    try:
        version = ctypes.CDLL(name).TBB_runtime_interface_version
        version.restype = ctypes.c_int
        if version() < TBB_MIN_INTERFACE:
            return False
        importlib.import_module("numba.np.ufunc.tbbpool")
    except (OSError, AttributeError, ImportError):
        return False
    return True


@functools.lru_cache(maxsize=None)
def ensure_threading_layer() -> str:
    """Make Numba run the kernels on a fork-safe and thread-safe layer.

    Runs once, on the first call that enters `threads_for`, before its
    kernels start. The rules are in the module docstring: the user's own
    choice is never overridden, and the only setting ever changed is
    ``numba.config.THREADING_LAYER = "workqueue"`` where TBB is unusable.

    Returns
    -------
    layer : str
        The running layer (``"tbb"``, ``"omp"``, ``"workqueue"``) when Numba
        had already started one; otherwise the layer Numba will start:
        ``"tbb"``, ``"workqueue"``, or the user's setting as they wrote it
        (``"default"``, ``"safe"``, ...).
    """
    running = _running_layer()
    if running is not None:
        if running == "omp" and user_layer_choice() is None:
            _log.warning(
                "Numba's threading layer was started as 'omp' before topo_numba was "
                "used: processes forked after a parallel call will abort (GNU OpenMP). "
                "Install the 'tbb' package, or set NUMBA_THREADING_LAYER=tbb.")
        return running
    choice = user_layer_choice()
    if choice is not None:
        return choice
    if _tbb_usable() or (_load_tbb_library(deep=True) and _tbb_usable()):
        return "tbb"
    import numba

    numba.config.THREADING_LAYER = "workqueue"
    _log.info("TBB is not available (pip install tbb): using Numba's 'workqueue' "
              "threading layer; calls from several Python threads run one at a time")
    return "workqueue"


# --------------------------------------------------------------------------
# the thread count of one call
# --------------------------------------------------------------------------

def in_worker_process() -> bool:
    """True in a ``multiprocessing`` child or a ``torch.utils.data`` worker.

    Covers every start method (fork, spawn, forkserver) and what is built on
    multiprocessing (``Pool``, ``ProcessPoolExecutor``, ``DataLoader``
    workers). Neither module is imported here: a process that has not
    imported them is not one of their workers.
    """
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        return True
    tud = sys.modules.get("torch.utils.data")
    get_worker_info = getattr(tud, "get_worker_info", None)
    return get_worker_info is not None and get_worker_info() is not None


def free_cores() -> int | None:
    """Cores of this process's CPU set not taken by other runnable tasks, >= 1.

    Reads the instantaneous number of runnable tasks of the machine (Linux
    ``/proc/loadavg``, fourth field; it counts the calling thread, which is
    taken off), takes off the runnable threads of this process that are not
    Python threads (`pool_runnable`: the kernel pool's workers, which keep
    spinning a moment after a parallel region, so that a call right after
    another one saw its own pool as competing work and ran on one thread),
    scales the rest to this process's CPU set when that is a subset of the
    machine's CPUs, and subtracts it from the size of the set. Costs about 15
    microseconds, and a few more per thread of this process when the machine
    has other runnable tasks. None where the count is not available.
    """
    try:
        with open("/proc/loadavg", "rb") as fh:
            runnable = int(fh.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None
    others = max(runnable - 1, 0)
    if others:
        others = max(others - pool_runnable(), 0)
    try:
        mine = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        mine = os.cpu_count() or 1
    machine = max(os.cpu_count() or mine, mine)
    return max(1, int(mine - others * mine / machine + 0.5))


def pool_runnable() -> int:
    """Runnable threads of this process that Python did not start (Linux
    ``/proc/self/task/*/stat``): the worker threads of Numba's threading
    layer (and of other native pools: BLAS, torch). 0 where unreadable."""
    python = {t.native_id for t in threading.enumerate()}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    n = 0
    for tid in tasks:
        if not tid.isdigit() or int(tid) in python:
            continue
        try:
            fd = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 512)
            finally:
                os.close(fd)
        except OSError:  # the thread ended meanwhile
            continue
        n += stat[stat.rfind(b")") + 2:][:1] == b"R"  # the state, after "pid (comm) "
    return n


def call_threads(n_voxels: int) -> int:
    """Threads one call on `n_voxels` voxels uses (rules in the module docstring)."""
    import numba

    if n_voxels < SERIAL_BELOW_VOXELS:
        return 1
    most = int(numba.config.NUMBA_NUM_THREADS)
    limit = _LIMIT.get()
    if limit is not None:
        return min(limit, most)
    current = numba.get_num_threads()
    if current != most:          # numba.set_num_threads on this thread
        return current
    if in_worker_process():
        return 1
    free = free_cores()
    if free is None:
        return most
    if free < most and n_voxels >= RESAMPLE_FROM_VOXELS:
        for _ in range(RESAMPLES):   # at most about 2 ms, only when cores look taken
            time.sleep(RESAMPLE_S)
            free = max(free, free_cores() or 1)
            if free >= most:
                break
    return min(most, free)


def _new_lock() -> threading.RLock:
    return threading.RLock()


# Serialises the kernel calls of several Python threads on the workqueue
# layer (not thread-safe). A fork child gets a fresh lock: a lock held by
# another thread of the parent at fork time would never be released there.
_workqueue_lock = _new_lock()


def _renew_workqueue_lock() -> None:
    global _workqueue_lock
    _workqueue_lock = _new_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_workqueue_lock)


@contextlib.contextmanager
def threads_for(n_voxels: int):
    """Run the enclosed kernels with `call_threads(n_voxels)` threads.

    Numba's per-thread count is set for the block and restored after it. On
    the workqueue layer the block also holds a process-wide lock.
    """
    import numba

    ensure_threading_layer()
    previous = numba.get_num_threads()  # starts the layer on the first call
    n = call_threads(n_voxels)
    lock = _workqueue_lock if numba.threading_layer() == "workqueue" else None
    if lock is not None:
        lock.acquire()
    try:
        if n != previous:
            numba.set_num_threads(n)
        try:
            yield
        finally:
            if n != previous:
                numba.set_num_threads(previous)
    finally:
        if lock is not None:
            lock.release()


def kernel_threads(fn):
    """Decorator: run `fn` inside `threads_for` of its first argument's size."""
    @functools.wraps(fn)
    def wrapper(first, *args, **kwargs):
        with threads_for(int(getattr(first, "size", SERIAL_BELOW_VOXELS))):
            return fn(first, *args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------
# the public control
# --------------------------------------------------------------------------

class _ThreadLimit(contextlib.ContextDecorator):
    """What `thread_limit` returns: a context manager and a decorator."""

    def __init__(self, n: int):
        self.n = n
        self._tokens: list = []

    def _recreate_cm(self):  # a decorated function enters a fresh copy per call
        return type(self)(self.n)

    def __enter__(self):
        self._tokens.append(_LIMIT.set(self.n))
        return self

    def __exit__(self, *exc):
        _LIMIT.reset(self._tokens.pop())
        return False

    def __repr__(self) -> str:
        return f"thread_limit({self.n})"


def thread_limit(n: int) -> _ThreadLimit:
    """Use at most `n` threads in topo_numba's CPU functions called in a block.

    A context manager (``with thread_limit(n): ...``) and a decorator
    (``@thread_limit(n)``). Each call in the block uses `n` threads (at most
    Numba's pool). It applies to the calls made by the thread that
    entered it (and to asyncio tasks started inside), not to threads
    started inside the block, and it wins over every default: inside a
    data-loader worker, ``thread_limit(4)`` gives four threads. Blocks nest;
    the innermost one applies. Nothing outside topo_numba is affected (not
    ``numba.get_num_threads()``, not your own Numba code).

    Parameters
    ----------
    n : int
        Threads per call, >= 1. Numbers above Numba's pool size
        (``numba.config.NUMBA_NUM_THREADS``, by default the number of cores)
        mean the whole pool. Inputs smaller than 65,536 voxels still run on
        one thread.

    Returns
    -------
    limit : context manager
        Also usable as a function decorator.

    Raises
    ------
    TypeError
        If `n` is not an integer.
    ValueError
        If `n` < 1.

    Notes
    -----
    Without a limit, a call uses the count set by ``numba.set_num_threads``
    when one was set on the calling thread; one thread in worker processes
    (``multiprocessing`` children, ``torch.utils.data.DataLoader`` workers),
    as torch does; otherwise all of Numba's threads less the cores that
    other runnable tasks hold when the call starts. A limit is not reduced
    for busy cores: it is the thread count you asked for. See
    docs/training.md.

    Examples
    --------
    >>> import numpy as np
    >>> from topo_numba.flow import generate_direct_flows
    >>> from topo_numba._cpu.threads import thread_limit
    >>> labels = np.zeros((8, 8, 8), np.int32)
    >>> labels[2:6, 2:6, 2:6] = 1
    >>> with thread_limit(1):
    ...     flows = generate_direct_flows(labels)
    >>> flows.shape
    (3, 8, 8, 8)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"thread_limit: n must be an int >= 1; got {n!r}")
    if n < 1:
        raise ValueError(f"thread_limit: n must be an int >= 1; got {n!r}")
    return _ThreadLimit(int(n))
