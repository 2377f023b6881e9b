"""engine/signals.py with real signals sent to this process (the end-to-end runs are in
tests/cli/test_cli_requeue.py and tests/engine/test_ddp.py)."""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest

from anatssl.engine.signals import RunInterrupted, StopSignals


def _deliver(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary


def test_the_first_signal_is_recorded_and_the_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with StopSignals((signal.SIGTERM, signal.SIGUSR1)) as stop:
        assert stop.received == 0
        _deliver(signal.SIGUSR1)
        assert stop.received == signal.SIGUSR1  # the process is still here: only recorded
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    # a test runner started in the background has SIGINT ignored: give it Python's usual handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopSignals((signal.SIGINT,)) as stop:
            _deliver(signal.SIGINT)
            assert stop.received == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                _deliver(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with StopSignals((signal.SIGUSR1,)) as stop:
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
            _deliver(signal.SIGUSR1)
            assert stop.received == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_run_interrupted_exit_codes_and_pickling() -> None:
    e = RunInterrupted("stopped by SIGTERM at step 7 of 20", signal.SIGTERM, 7)
    assert e.exit_code == 143
    assert RunInterrupted("x", signal.SIGUSR1, 1).exit_code == 138
    assert RunInterrupted("x", signal.SIGINT, 1).exit_code == 130
    back = pickle.loads(pickle.dumps(e))  # crosses the benchmark's process pool
    assert (str(back), back.signum, back.step, back.exit_code) == (str(e), e.signum, 7, 143)
