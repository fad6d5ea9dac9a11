"""The engine's reaper: /proc parsing on written tables, and real processes killed with their parent.

The process tests need no engine: a stand-in parent starts the reaper exactly as `Engine.start` does,
then children and a grandchild where vLLM would start its engine core and workers, and is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from aligner.engine.reaper import ProcessEntry, Tracker, adoptable, alive, descendants, parse_stat, process_table

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper reads /proc (Linux)")


def stat_line(pid: int, comm: str, state: str, ppid: int, start: int) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize ...
    rest = [state, ppid, 1, 1, 0, -1, 4194304, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0, start, 3133440, 402]
    return f"{pid} ({comm}) " + " ".join(map(str, rest)) + "\n"


def test_stat_lines_parse_whatever_the_command_name_holds():
    assert parse_stat(stat_line(7, "VLLM::EngineCore", "S", 3, 2254845)) == ProcessEntry(3, 2254845)
    # A name may hold spaces and parentheses: fields count from the last ')'.
    assert parse_stat(stat_line(7, "a) b (c) d", "R", 42, 99)) == ProcessEntry(42, 99)
    assert parse_stat(stat_line(7, "x", "Z", 1, 5)).zombie
    with open("/proc/self/stat") as stat:  # this process's own line
        assert parse_stat(stat.read()).ppid == os.getppid()


# The replica (10) started its reaper (20) at tick 100, then the engine core (30, whose worker is 31
# and the worker's compile helper 32). 11 is an older child of the replica; 40 is not in the tree.
TABLE = {
    10: ProcessEntry(1, 50),
    11: ProcessEntry(10, 60),
    20: ProcessEntry(10, 100),
    30: ProcessEntry(10, 120),
    31: ProcessEntry(30, 130),
    32: ProcessEntry(31, 140),
    40: ProcessEntry(1, 150),
}


def test_the_reaper_adopts_its_parents_newer_children_only():
    assert adoptable(TABLE, parent=10, born=100, me=20) == {30: 120}


def test_descendants_follow_the_tree_below_live_roots():
    assert descendants(TABLE, [30]) == {30, 31, 32}
    assert descendants(TABLE, [31, 99]) == {31, 32}  # 99: gone
    assert descendants(TABLE, []) == set()


def test_a_reused_pid_or_a_zombie_is_not_alive():
    table = {**TABLE, 31: ProcessEntry(1, 999), 32: ProcessEntry(31, 140, zombie=True)}
    assert alive(table, {30: 120, 31: 130, 32: 140, 77: 1}) == {30: 120}


def cmdlines(proc, **by_pid: bytes):
    """A /proc of cmdline files only (pid given as `p30`)."""
    for name, cmdline in by_pid.items():
        (proc / name[1:]).mkdir()
        (proc / name[1:] / "cmdline").write_bytes(cmdline)


SPAWNED = b"python\0-c\0from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)"


def test_the_tracker_keeps_the_engines_processes_after_their_parent_is_gone(tmp_path):
    cmdlines(tmp_path, p30=SPAWNED)
    tracker = Tracker(parent=10, me=20, born=100, proc=tmp_path)
    tracker.scan(TABLE)
    tracker.adopting = False
    # The replica died: the engine core is reparented, a new child of pid 10 (reused) is not adopted.
    after = {30: ProcessEntry(1, 120), 31: ProcessEntry(30, 130), 32: ProcessEntry(31, 140), 33: ProcessEntry(10, 500)}
    assert tracker.survivors(after) == {30: 120, 31: 130, 32: 140}


def test_multiprocessings_resource_tracker_and_vanished_children_are_not_the_engines(tmp_path):
    cmdlines(tmp_path, p30=SPAWNED, p35=b"python\0-c\0from multiprocessing.resource_tracker import main;main(5)")
    tracker = Tracker(parent=10, me=20, born=100, proc=tmp_path)
    # 36: a child gone before its command line could be read.
    tracker.scan({**TABLE, 35: ProcessEntry(10, 125), 36: ProcessEntry(10, 126)})
    assert tracker.roots == {30: 120}


def test_the_process_table_holds_this_process_and_its_parent():
    table = process_table()
    assert table[os.getpid()].ppid == os.getppid()


# A stand-in for a replica: the reaper first, then an "engine" child with a grandchild, and a forked
# copy of itself (which holds the reaper's stdin open, as a forked engine core would); after
# `started`, one more child the reaper must leave alone. It prints the pids and waits to be killed.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from aligner.engine.reaper import Reaper

    reaper = Reaper.start()
    engine = subprocess.Popen([sys.executable, "-c",
        "import subprocess, time; w = subprocess.Popen(['sleep', '600']); print(w.pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    worker = int(engine.stdout.readline())
    forked = os.fork()
    if forked == 0:
        time.sleep(600)
        os._exit(0)
    reaper.started()  # it adopts what its parent started so far, as when an engine has started
    later = subprocess.Popen(["sleep", "600"])
    print(reaper.process.pid, engine.pid, worker, forked, later.pid, flush=True)
    if sys.argv[1] == "shutdown":
        reaper.reap()
        print("reaped", flush=True)
    time.sleep(600)
    """
)


def start_parent(mode: str) -> tuple[subprocess.Popen, list[psutil.Process]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    line = parent.stdout.readline()
    assert line, f"the stand-in parent failed (exit {parent.poll()})"
    return parent, [psutil.Process(int(pid)) for pid in line.split()]


def running(proc: psutil.Process) -> bool:
    """Still this very process (not a reused pid) and not a zombie (a dead process its new parent has
    not waited for holds no memory)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while any(running(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in procs if running(p)]


def stop(procs: list[psutil.Process]) -> None:
    for p in procs:
        if running(p):
            p.kill()


def test_a_sigkilled_parent_takes_its_engine_processes_along():
    parent, (reaper, engine, worker, forked, later) = start_parent("kill")
    try:
        assert all(running(p) for p in (reaper, engine, worker, forked, later))
        assert os.getsid(reaper.pid) == reaper.pid, "the reaper has a session of its own"
        parent.kill()
        parent.wait(10)
        # Within a few polls: the forked copy keeps the reaper's stdin open, so it notices the reparenting.
        assert not wait_gone([engine, worker, forked, reaper], timeout=15)
        assert running(later), "a child started after the engine is not the engine's"
    finally:
        stop([reaper, engine, worker, forked, later])


def test_an_engine_shutdown_reaps_what_is_left_and_the_reaper_exits():
    parent, (reaper, engine, worker, forked, later) = start_parent("shutdown")
    try:
        assert parent.stdout.readline().strip() == "reaped"
        # `reap` returned after the reaper exited, and the reaper returned after its targets were gone.
        assert not [p for p in (reaper, engine, worker, forked) if running(p)]
        assert running(later) and parent.poll() is None
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        stop([reaper, engine, worker, forked, later])
