"""`aligner serve` stops on SIGINT and SIGTERM, whatever it inherited (no Ray: the handlers alone)."""

import signal

import pytest

from serve.cli.serve import StopSignals


@pytest.fixture
def restored():
    """The test process's own handlers come back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in StopSignals.SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", StopSignals.SIGNALS)
def test_a_stop_signal_interrupts_even_when_inherited_ignored(restored, signum):
    # A script's background job starts with SIGINT ignored; Python alone would keep ignoring it.
    signal.signal(signum, signal.SIG_IGN)
    stop = StopSignals()
    stop.install()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signum)
    assert stop.name == signal.Signals(signum).name
    # Once: a second signal (impatience, a supervisor's repeat) does not cut the cleanup short.
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGTERM)
    assert stop.received == signum


def test_during_the_cleanup_both_signals_are_ignored(restored):
    stop = StopSignals()
    stop.install()
    stop.ignore()
    for signum in StopSignals.SIGNALS:
        assert signal.getsignal(signum) is signal.SIG_IGN
        signal.raise_signal(signum)  # nothing happens: the process is still here
    assert stop.received is None and stop.name == "interrupted"
