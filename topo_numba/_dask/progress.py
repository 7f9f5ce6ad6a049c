"""A tqdm progress bar for Dask's local schedulers (threads, processes, synchronous).

Private: `topo_numba.dask` uses it for ``progress=True``. One bar per
computation (the per-instance pass, then the writing pass, ...). A
``distributed`` cluster reports progress on its own dashboard instead.
tqdm is optional (the ``progress`` extra); without it, asking for a bar is
a one-line ImportError, raised before anything is computed.
"""

from __future__ import annotations

from dask.callbacks import Callback


class TqdmCallback(Callback):
    """Progress of every Dask computation run inside the ``with`` block."""

    def __init__(self, desc: str = "topo_numba", **tqdm_kwargs):
        try:
            import tqdm  # noqa: F401
        except ImportError:
            raise ImportError("progress=True needs tqdm: "
                              "pip install 'topo-numba[progress]'") from None
        super().__init__()
        self._desc = desc
        self._kwargs = tqdm_kwargs
        self._bar = None

    def _start_state(self, dsk, state):
        from tqdm.auto import tqdm

        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._bar = tqdm(total=total, desc=self._desc, unit="task", **self._kwargs)

    def _posttask(self, key, result, dsk, state, worker_id):
        if self._bar is not None:
            self._bar.update(1)

    def _finish(self, dsk, state, errored):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
