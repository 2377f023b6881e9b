"""Stop requests: Ctrl-C, SIGTERM and SIGUSR1 end a run at the next step boundary, after a checkpoint.

:class:`StopSignals` replaces the handlers of those signals for the length of a training loop; a
handler only records the signal, and the loop checks :attr:`StopSignals.received` after each step
(every rank agrees on it through one ``all_reduce``), saves ``last.pt`` and raises
:class:`RunInterrupted`, whose ``exit_code`` is 128 + the signal number:

======== ===== ==========================================================================
signal   exit  sent by
======== ===== ==========================================================================
SIGINT   130   Ctrl-C in a terminal
SIGTERM  143   ``kill``, ``scancel``, a job's time limit, torchrun forwarding its own SIGTERM
SIGUSR1  138   SLURM's ``--signal=USR1@120`` warning before the time limit (requeue)
======== ===== ==========================================================================

A second signal while the first is being honoured acts at once: a second Ctrl-C raises
``KeyboardInterrupt``, a second SIGTERM / SIGUSR1 ends the process as the signal's default would;
``last.pt`` then keeps the last step saved before it. Handlers can only be set in the main thread;
elsewhere (a training run inside a worker thread) the signals keep their previous behaviour, and so
does a signal the process was started with ignored (``SIG_IGN``: Ctrl-C of a background job).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from anatssl.errors import AnatsslError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class RunInterrupted(AnatsslError, RuntimeError):
    """A stop signal ended the run after its checkpoint was saved; ``exit_code`` = 128 + ``signum``
    (130, 143, 138: what a shell reports for a process that signal ended), so a requeue script reads
    any of them as "not finished: rerun with ``--resume auto``"."""

    def __init__(self, message: str, signum: int, step: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.step = step
        self.exit_code = 128 + signum

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across processes (the benchmark's worker pool)
        return (type(self), (str(self), self.signum, self.step))


class StopSignals:
    """Context manager: record the first stop signal in :attr:`received` (0 while none came)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received = 0
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received = signum
            return
        # a second signal: act now, as if no handler were installed
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores the stop signals, which the training process
    alone acts on. A Ctrl-C in a terminal or a cluster's signal reaches every process of the job; a
    worker that died of it would otherwise make the loader raise in the middle of a step."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
