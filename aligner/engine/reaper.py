"""Processes that die with the process that started them, however it dies: an engine's, a local Ray's.

vLLM runs an engine in child processes (`VLLM::EngineCore`, and under it `VLLM::Worker` where the model runs apart), and
nothing in them watches their parent: a replica or server that was SIGKILLed (a supervisor's step
after SIGTERM) left both running, in 6 of 6 measured runs, about 2.9 GB each, ignoring SIGTERM, one
of them still decoding. On a GPU that memory keeps the next replica from starting. vLLM has no hook
in the processes it starts (in a Ray actor they are fresh interpreters, `spawn`), and a parent-death
signal would not fit anyway: it fires when the *thread* that started the child ends, and engines
start in a worker thread. Ray's processes share the fate of the driver that started them only in
part: raylet and GCS get SIGKILL from the kernel, but its agents then wait a minute on the dead GCS
before they exit (measured: 62 s).

So `Reaper.start()` first starts a reaper: this file, run as a script in a process of its own
(standard library only, so it starts in milliseconds and imports nothing of Aligner, torch or vLLM).
It adopts the children its parent starts until told `started`, follows their descendants, and
SIGKILLs all of them, then exits, as soon as

- its parent is gone (its stdin reaches end of file, or it has been reparented), or
- it is told `reap` (an engine's shutdown: whatever vLLM's own shutdown left running).

`Engine.start` starts one around vLLM's start, `aligner serve` one around `ray.init`.
A process is known by (pid, start time), so a reused pid is never killed. The reaper has a session
of its own, so a Ctrl-C or a signal to its parent's process group does not stop it before its work.
Linux only (it reads /proc); elsewhere `Reaper.start` returns one that does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
POLL_S = 1.0  # how often the parent is checked (its death usually arrives at once, as end of file)
SCAN_EVERY = 5  # polls between re-reads of the process tree once adoption is over
GONE_WAIT_S = 5.0  # how long a reap waits for the killed processes to be gone
# Children of the parent never adopted: multiprocessing's resource tracker serves the
# whole process (and exits by itself when the process does).
NOT_ADOPTED = (b"multiprocessing.resource_tracker",)


@dataclass(frozen=True)
class ProcessEntry:
    ppid: int
    start: int  # start time in clock ticks after boot: with the pid, a process's identity
    zombie: bool = False


def parse_stat(text: str) -> ProcessEntry:
    """/proc/PID/stat -> its parent, start time and whether it is a zombie. The command name (field 2)
    is in parentheses and may hold spaces and parentheses itself, so fields are counted after the last ')'."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5) (state), fields[1] field 4 (ppid), fields[19] field 22 (starttime).
    return ProcessEntry(ppid=int(fields[1]), start=int(fields[19]), zombie=fields[0] in ("Z", "X"))


def process_table(proc: Path = PROC) -> dict[int, ProcessEntry]:
    """Every process on the machine (as this process may see them): pid -> entry."""
    table = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError):  # gone meanwhile, or not readable
                continue
    return table


def descendants(table: Mapping[int, ProcessEntry], roots: Iterable[int]) -> set[int]:
    """The roots that are in `table` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, entry in table.items():
        children.setdefault(entry.ppid, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def adoptable(table: Mapping[int, ProcessEntry], parent: int, born: int, me: int) -> dict[int, int]:
    """Children of `parent` started no earlier than the reaper (`born`): the ones to adopt."""
    return {pid: e.start for pid, e in table.items() if e.ppid == parent and e.start >= born and pid != me}


def alive(table: Mapping[int, ProcessEntry], known: Mapping[int, int]) -> dict[int, int]:
    """The `known` processes (pid -> start) still running as themselves (zombies are gone: their memory is)."""
    return {
        pid: start
        for pid, start in known.items()
        if pid in table and table[pid].start == start and not table[pid].zombie
    }


class Tracker:
    """What the reaper knows: the roots it adopted and every descendant seen under them."""

    def __init__(self, parent: int, me: int, born: int, proc: Path = PROC):
        self.parent, self.me, self.born, self.proc = parent, me, born, proc
        self.adopting = True
        self.roots: dict[int, int] = {}
        self.known: dict[int, int] = {}
        self.passed: set[tuple[int, int]] = set()  # children looked at and found not to be adopted

    def scan(self, table: Mapping[int, ProcessEntry]) -> None:
        if self.adopting:
            for pid, start in adoptable(table, self.parent, self.born, self.me).items():
                if pid not in self.roots and (pid, start) not in self.passed:
                    if self.adopts(pid):
                        self.roots[pid] = start
                    else:
                        self.passed.add((pid, start))
        live_roots = alive(table, self.roots)
        self.known.update({pid: table[pid].start for pid in descendants(table, live_roots) if pid != self.me})

    def adopts(self, pid: int) -> bool:
        try:
            cmdline = (self.proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return False  # gone already
        return not any(marker in cmdline for marker in NOT_ADOPTED)

    def survivors(self, table: Mapping[int, ProcessEntry]) -> dict[int, int]:
        self.scan(table)
        return alive(table, self.known)


def reap(tracker: Tracker, proc: Path = PROC, wait_s: float = GONE_WAIT_S) -> list[int]:
    """SIGKILL every adopted process still running; wait (boundedly) until they are gone. The pids killed."""
    targets = tracker.survivors(process_table(proc))
    for pid in targets:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + wait_s
    while alive(process_table(proc), targets) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(targets)


def watch(parent: int, proc: Path = PROC, poll_s: float = POLL_S) -> list[int]:
    """The reaper's life: follow the adopted processes until it must reap them (see the module doc)."""
    me = os.getpid()
    tracker = Tracker(parent, me, parse_stat((proc / str(me) / "stat").read_text()).start, proc)
    pending = b""
    polls = 0
    while True:
        readable, _, _ = select.select([0], [], [], poll_s)
        if readable:
            chunk = os.read(0, 4096)
            if not chunk:
                return reap(tracker, proc)  # the parent closed its end, or died
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.strip() == b"started":
                    tracker.scan(process_table(proc))
                    tracker.adopting = False
                    os.write(1, b"started\n")  # the parent waits for it: what it starts next is not adopted
                elif line.strip() == b"reap":
                    return reap(tracker, proc)
        if os.getppid() != parent:  # reparented: the parent died (a forked child may hold our stdin open)
            return reap(tracker, proc)
        polls += 1
        if tracker.adopting or polls % SCAN_EVERY == 0:
            tracker.scan(process_table(proc))


class Reaper:
    """The parent's side of a reaper."""

    def __init__(self, process: subprocess.Popen[bytes] | None):
        self.process = process

    @classmethod
    def start(cls) -> Reaper:
        """A reaper for the processes this process is about to start (an engine's, a local Ray's)."""
        if not (PROC / str(os.getpid()) / "stat").exists():
            return cls(None)
        process = subprocess.Popen(
            # -I -S: no site packages, no environment: the standard library is all it needs.
            [sys.executable, "-I", "-S", __file__, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        return cls(process)

    def _send(self, line: str) -> None:
        if self.process is not None and self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.write(line.encode() + b"\n")
                self.process.stdin.flush()
            except BrokenPipeError:  # the reaper is gone: nothing left to tell it
                pass

    def started(self, timeout: float = 30) -> None:
        """They have started: the processes to reap are the ones adopted so far and their descendants
        (waits until the reaper says so, so that what this process starts next is not adopted)."""
        if self.process is None or self.process.stdout is None:
            return
        self._send("started")
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if readable:
            self.process.stdout.readline()

    def reap(self, timeout: float = GONE_WAIT_S + 5) -> None:
        """Kill whatever of them is still running and wait for the reaper to finish."""
        if self.process is None:
            return
        self._send("reap")
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # it keeps going on its own; a shutdown must not hang on it
            return
        if self.process.stdout is not None:
            self.process.stdout.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the server; the reaper follows it
    killed = watch(int(argv[1]))
    if killed:
        sys.stderr.write(f"aligner reaper: killed processes {killed} of parent {argv[1]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
