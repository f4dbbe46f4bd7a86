"""machina.signals: a handler takes no lock.  ShutdownSignal sets the stop event, even when the signal
arrives while the main thread holds the event's own lock (inside ``Event.wait``); SignalRelay runs its
work on a thread of its own, in order, past a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from machina.signals import ShutdownSignal, SignalRelay


def test_sigterm_sets_the_event_and_is_recorded() -> None:
    with ShutdownSignal() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.wait(5)
    assert stop.is_set()


def test_a_second_sigint_raises_keyboard_interrupt() -> None:
    with ShutdownSignal() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.wait(5)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_the_previous_handlers_come_back_and_the_relay_ends() -> None:
    before = signal.getsignal(signal.SIGTERM)
    relays = {t for t in threading.enumerate() if t.name == "signal-relay"}
    with ShutdownSignal():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert {t for t in threading.enumerate() if t.name == "signal-relay"} == relays


def test_a_signal_while_the_main_thread_holds_the_events_lock_does_not_hang() -> None:
    # In a process of its own: on the code before, the handler's Event.set() waited for ever on the lock
    # its own thread held (the window that hung machina-enqueued once in 200 restarts).
    script = textwrap.dedent(
        """
        import signal, sys
        from machina.signals import ShutdownSignal, SignalRelay
        with ShutdownSignal() as stop:
            with stop._cond:  # as inside Event.wait, between taking the lock and waiting
                signal.raise_signal(signal.SIGTERM)
                for _ in range(1000):  # bytecodes for the handler to run between
                    pass
            sys.exit(0 if stop.wait(5) else 3)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=30, check=False)
    assert done.returncode == 0


def test_a_relayed_signal_is_handled_on_the_relay_thread_in_order() -> None:
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def deliver(signum: int) -> None:
        seen.append((signum, threading.current_thread().name))
        if len(seen) == 3:
            done.set()

    with SignalRelay((signal.SIGHUP, signal.SIGUSR1), deliver, "test-relay"):
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP):
            signal.raise_signal(sig)
        assert done.wait(5)
    assert seen == [(signal.SIGHUP, "test-relay"), (signal.SIGUSR1, "test-relay"), (signal.SIGHUP, "test-relay")]


def test_a_failing_delivery_does_not_stop_the_relay(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    second = threading.Event()

    def deliver(signum: int) -> None:
        calls.append(signum)
        if len(calls) == 1:
            raise RuntimeError("reload failed")
        second.set()

    with SignalRelay((signal.SIGHUP,), deliver, "test-relay"):
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGHUP)
        assert second.wait(5)
    assert calls == [signal.SIGHUP, signal.SIGHUP]
    assert "handling SIGHUP failed" in caplog.text
