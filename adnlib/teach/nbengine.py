"""A papermill engine for headless runs that cannot stall on widgets (`papermill --engine adnlib`).

Why it exists (the stall of notebook 03's viewer, found by reproducing it): nbclient imitates a browser for
ipywidgets' ``Output`` widget. Each output captured by such a widget is sent back to the kernel as a ``comm_msg``
on the *shell* socket — the same socket on which nbclient is, at that moment, awaiting the cell's ``execute_reply``.
When that send (about 1 MB for a captured PNG) overlaps the arrival of the reply, the ZeroMQ socket's edge-triggered
file descriptor loses its "readable" edge: the reply sits in the socket (``ZMQ_EVENTS`` has ``POLLIN``) while the
descriptor stays unreadable, so asyncio never wakes the waiting poll. The client then sleeps until the cell timeout
(forever without one); at the timeout a non-blocking re-poll finds the reply and the cell is marked *completed*.
An ``interactive`` whose callback calls ``plt.show()`` puts a large output into an ``Output`` widget at the very
end of a cell, so it hit this most of the time in a synthetic reproduction (``benchmarks/notebook_soak.py --repro``).

What this engine changes, compared with papermill's default one:
1. The ``Output``-widget imitation records outputs (they are saved in the notebook's widget state, as before) but
   does not echo them to the kernel. No headless kernel reads that echo back, and without it nothing but
   ``execute_request`` is ever sent on the shell socket while a reply is awaited: the race cannot happen.
2. The reply is awaited in slices of ``POLL_SLICE_S``: each slice ends with a non-blocking re-poll, so a lost
   wake-up of any other origin costs at most one slice instead of the whole cell timeout.
3. A cell that exceeds its limit fails the run, naming the cell (index and first line); per-cell limits come from
   a ``timeout_func`` (see `adnlib.teach.notebooks.CellLimits`).

The teaching notebooks themselves show their figures in ``Image`` widgets, not ``Output`` widgets, so they do not
hit the race under the default papermill engine either.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
from queue import Empty


# papermill's entry point names this module's HeadlessEngine, and papermill loads every entry point while its own
# `papermill.engines` is first imported. When this module is imported first, that happens during the imports just
# below, before HeadlessEngine exists: the entry point then gets a stand-in that defers to the real class (PEP 562
# module __getattr__, consulted only while the name is missing). Without it `import adnlib.teach.nbengine` in a
# fresh interpreter failed with "partially initialized module".
class _DeferredEngine(type):
    def __getattr__(cls, name):
        return getattr(HeadlessEngine, name)


class _HeadlessEngineWhileImporting(metaclass=_DeferredEngine):
    """What papermill registers as engine `adnlib` when this module is imported before papermill."""


def __getattr__(name: str):
    if name == "HeadlessEngine":
        return _HeadlessEngineWhileImporting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from nbclient.exceptions import CellTimeoutError  # noqa: E402 - after the stand-in above
from nbclient.output_widget import OutputWidget  # noqa: E402
from papermill.clientwrap import PapermillNotebookClient  # noqa: E402
from papermill.engines import NBClientEngine  # noqa: E402
from papermill.log import logger  # noqa: E402
from papermill.utils import merge_kwargs, remove_args  # noqa: E402

POLL_SLICE_S = 1.0


class RecordingOutputWidget(OutputWidget):
    """nbclient's Output-widget imitation, without the echo of each output to the kernel (see the module doc)."""

    def sync_state(self) -> None:
        """Keep the outputs on the client side only: they are still saved in the notebook's widget state."""


def _sliced(get_msg):
    """Wrap a channel's ``get_msg(timeout)`` so that it waits in slices; each slice re-polls without blocking."""

    async def get_msg_in_slices(timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await get_msg(timeout=min(POLL_SLICE_S, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_in_slices


def _with_sliced_replies(kc):
    if not getattr(kc.shell_channel, "adnlib_sliced", False):
        kc.shell_channel.get_msg = _sliced(kc.shell_channel.get_msg)
        kc.shell_channel.adnlib_sliced = True
    return kc


def first_code_line(source: str) -> str:
    """The first non-blank line of a cell, to name it in messages."""
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


class HeadlessClient(PapermillNotebookClient):
    """papermill's client with the three changes of the module doc."""

    def __init__(self, nb_man, **kwargs):
        super().__init__(nb_man, **kwargs)
        self.widget_registry = {"@jupyter-widgets/output": {"OutputModel": RecordingOutputWidget}}

    async def async_start_new_kernel(self, **kwargs):
        """The kernel with PLAIN_PROGRESS_ENV set: progress as one text line per loop, no widget bands in the book
        (adnlib.progress); a value the caller's environment sets (0: widgets as in JupyterLab) is kept."""
        from adnlib.progress import PLAIN_PROGRESS_ENV
        env = {PLAIN_PROGRESS_ENV: "1", **kwargs.pop("env", os.environ)}
        return await super().async_start_new_kernel(env=env, **kwargs)

    def start_new_kernel(self, **kwargs):
        return _wait(self.async_start_new_kernel(**kwargs))

    # nbclient's sync methods are run_sync wrappers bound to its own async functions: override both forms.
    async def async_start_new_kernel_client(self):
        return _with_sliced_replies(await super().async_start_new_kernel_client())

    def start_new_kernel_client(self):
        return _with_sliced_replies(super().start_new_kernel_client())

    def execute_cell(self, cell, cell_index, *args, **kwargs):
        try:
            return super().execute_cell(cell, cell_index, *args, **kwargs)
        except CellTimeoutError as exc:
            limit = self._get_timeout(cell)
            raise CellTimeoutError(f"cell {cell_index} ({first_code_line(cell.source)[:60]!r}) did not finish "
                                   f"within its limit of {limit} s") from exc
        except KeyboardInterrupt:
            _settle_tasks()
            raise CellInterrupted(cell_index, first_code_line(cell.source)) from None

    def stop_kernel(self) -> None:
        """After Ctrl-C: shut the kernel down if one is still there, so that none outlives this process (and
        prints its own warning after our one line)."""
        _settle_tasks()
        if self.km is None:
            return
        if self.km.has_kernel:  # killed, not shut down: jupyter_client's shutdown first sends SIGINT, and a kernel
            # still starting answers that with "Fatal Python error: init_import_site" and a traceback on our stderr
            with contextlib.suppress(Exception):  # already gone: nothing to stop
                _wait(self.km.signal_kernel(getattr(signal, "SIGKILL", signal.SIGTERM)))
        with contextlib.suppress(Exception):
            self._cleanup_kernel()


class CellInterrupted(KeyboardInterrupt):
    """Ctrl-C while a cell ran: .cell_index and .first_line name the cell."""

    def __init__(self, cell_index: int, first_line: str):
        super().__init__(f"cell {cell_index} ({first_line[:60]!r})")
        self.cell_index, self.first_line = cell_index, first_line


def _wait(result):
    """The value of a call to a sync or an async kernel manager's method (nbclient's is async)."""
    if inspect.isawaitable(result):
        from jupyter_core.utils import ensure_event_loop
        return ensure_event_loop().run_until_complete(result)
    return result


def _settle_tasks(seconds: float = 5.0) -> None:
    """After Ctrl-C stopped the event loop mid-cell: cancel the client's pending tasks and let them end (at most
    `seconds`), so that none later prints "Task exception was never retrieved" with its traceback."""
    from jupyter_core.utils import ensure_event_loop
    loop = ensure_event_loop()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=seconds))
    for task in pending:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: asyncio stays quiet about it


class HeadlessEngine(NBClientEngine):
    """papermill engine `adnlib`: `papermill in.ipynb out.ipynb --engine adnlib` (registered as an entry point)."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, **kwargs):
        kwargs = remove_args(["input_path"], **kwargs)
        safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(safe_kwargs, timeout=execution_timeout or kwargs.get("timeout"),
                                    startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                                    log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
        client = HeadlessClient(nb_man, **final_kwargs)
        try:
            return client.execute()
        except KeyboardInterrupt:  # Ctrl-C while the kernel started (nbclient cleans up only once it runs)
            client.stop_kernel()
            raise

