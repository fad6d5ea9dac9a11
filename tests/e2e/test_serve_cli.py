"""`aligner serve` as a user runs it: its own Ray, as a script's background job, the printed curl
answered, then a clean stop with `kill -INT`; SIGKILLed in the middle of a request.

Runs before the shared app of this package exists (marker `own_ray`), so the Ray it starts
is the only one on the machine and "no Ray process left behind" can be checked exactly. The
stop tests know the server's processes by a variable of their own in the environment, which Ray's
and vLLM's processes inherit: they find (and clean up) those processes and no other.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import psutil
import pytest
import yaml

from .conftest import E2E_CONFIG, free_port

RAY_PROCESS = re.compile(r"ray::|raylet|gcs_server|ray/dashboard|VLLM::EngineCore")
RUN_TAG = "ALIGNER_TEST_SERVE_RUN"  # in the server's environment: marks every process it starts


def ray_processes() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            if RAY_PROCESS.search(" ".join(proc.info["cmdline"] or [proc.info["name"] or ""])):
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


class Lines:
    """A pipe read by a thread, so the test can wait for a line without blocking on the pipe."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float, proc: subprocess.Popen) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert proc.poll() is None, f"aligner serve exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout}s"
            time.sleep(0.5)
        return self.text()


def serve_argv(tmp_path, model_dir) -> tuple[list[str], int, str]:
    """`aligner serve` on fresh ports with a scratch store: (argv, HTTP port, store URL)."""
    port = free_port()
    config = tmp_path / "aligner.yaml"
    config.write_text(yaml.safe_dump({"engine": E2E_CONFIG["engine"], "replica_num_cpus": 0}))
    store = f"sqlite:///{tmp_path}/tenants.db"
    argv = [sys.executable, "-m", "serve.cli", "serve", "--config", str(config), "--model", str(model_dir)]
    argv += ["--http-port", str(port), "--grpc-port", str(free_port()), "--tenant-store", store]
    return argv, port, store


def still_running(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


STOP_BOUND_S = 120  # a handled stop: Serve's graceful shutdown (30 s at most), the engines', Ray's
GONE_BOUND_S = 30  # after the server is gone: nothing it started may be running this much later


def command(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return "?"


def tagged(tag: str) -> set[tuple[int, float]]:
    """The running processes whose environment carries `tag`: the server and everything it started
    (Ray passes its environment to its workers, vLLM to its engine processes)."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.add((proc.pid, proc.create_time()))
        except psutil.Error:  # gone, or another user's
            continue
    return found


def tree(proc: psutil.Process) -> set[tuple[int, float]]:
    """`proc` and its descendants now, by identity (a pid is reused, a pid with its start time is not)."""
    return {(p.pid, p.create_time()) for p in [proc, *proc.children(recursive=True)]}


def left_running(tag: str, known: set[tuple[int, float]], bound: float) -> tuple[list[str], float]:
    """Wait up to `bound` seconds for every process of the run to be gone: (what is still running, the
    seconds waited)."""
    started = time.monotonic()
    while True:
        left = tagged(tag) | {(pid, created) for pid, created in known if still_running(pid, created)}
        if not left or time.monotonic() - started > bound:
            return sorted(f"{pid}: {command(psutil.Process(pid))}" for pid, _ in left), time.monotonic() - started


def clean_up(tag: str, known: set[tuple[int, float]]) -> None:
    """After a failure: kill what this run left, and nothing else."""
    for pid, created in tagged(tag) | known:
        if still_running(pid, created):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def engine_processes(known: set[tuple[int, float]]) -> list[str]:
    running = [command(psutil.Process(pid)) for pid, created in known if still_running(pid, created)]
    return [c for c in running if "VLLM::" in c]


def test_a_scripts_background_job_starts_with_sigint_ignored():
    """What the next test relies on: a POSIX shell without job control starts `cmd &` with SIGINT
    ignored (bit 2 of SigIgn), and Python would keep it ignored."""
    shown = subprocess.run(["sh", "-c", "grep SigIgn /proc/self/status & wait $!"], capture_output=True, text=True)
    assert int(shown.stdout.split()[1], 16) & (1 << (signal.SIGINT - 1)), shown.stdout


@pytest.mark.own_ray
def test_aligner_serve_prints_a_working_curl_and_a_background_job_stops_on_sigint(tmp_path, model_dir):
    """`aligner serve &` in a script, as a user starts it: the curl it prints is answered, then `kill -INT`
    stops it with everything it started (it used to ignore SIGINT: still serving 180 s later). SIGTERM
    takes the same handler (tests/unit/serve/cli/test_serve_signals.py); one server start covers both."""
    assert not ray_processes(), "another Ray is running; this test must run before the shared app starts"
    argv, port, store = serve_argv(tmp_path, model_dir)
    tag, known = uuid.uuid4().hex, set()
    env = {**os.environ, RUN_TAG: tag, "ALIGNER_TENANT_STORE": "sqlite:////nonexistent/ignored.db"}  # the flag wins
    # `wait $!`: the shell waits for its background job and exits with the job's status.
    shell = subprocess.Popen(
        ["sh", "-c", '"$@" & wait $!', "sh", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    out, err = Lines(shell.stdout), Lines(shell.stderr)
    try:
        printed = out.wait_for("Ctrl-C stops the server.", 300, shell)
        assert f"http://127.0.0.1:{port}/v1" in printed and f"http://127.0.0.1:{port}/metrics" in printed
        assert "starting Ray" in err.text() and "deploying 1 model replica" in err.text()
        assert re.search(r"still starting after \d+s", err.text()), "progress while the engine starts"
        assert re.search(r"ready in \d+s", err.text())

        # The curl exactly as printed (its lines joined as a shell would).
        curl = printed[printed.index("curl -s") : printed.index("Ctrl-C")].replace("\\\n", " ")
        answered = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=300)
        assert answered.returncode == 0, answered.stderr
        completion = json.loads(answered.stdout)
        assert completion["object"] == "chat.completion" and completion["choices"][0]["message"]["content"]
        assert completion["alignment"]["strategy"] == "best_of_n" and set(completion["alignment"]["scores"]) == {
            "relevance",
            "verbosity",
        }
        key = re.search(r"Bearer (alk_\S+?)'", curl).group(1)

        (server,) = psutil.Process(shell.pid).children()
        known = tree(server)
        assert len(known) >= 5, "Ray's processes, the replicas and an engine core"
        assert engine_processes(known), "the replica's engine runs in processes of its own"
        sent = time.monotonic()
        server.send_signal(signal.SIGINT)
        shell.wait(STOP_BOUND_S)
        stopped_in = time.monotonic() - sent
        left, waited = left_running(tag, known, GONE_BOUND_S)
    finally:
        clean_up(tag, known)
        if shell.poll() is None:
            shell.kill()
    print(f"stopped {stopped_in:.1f}s after SIGINT; last process gone {waited:.1f}s after that")
    assert shell.returncode == 0, err.text()[-3000:]
    assert "shutting down (SIGINT)" in err.text() and "stopped" in err.text() and "Traceback" not in err.text()
    assert not left, left
    assert not ray_processes(), [psutil.Process(p).cmdline() for p in ray_processes() if psutil.pid_exists(p)]

    # The temporary key dies with the server.
    from aligner.tenants import TenantStore

    opened = TenantStore.open(store)
    try:
        assert opened.authenticate(key) is None
    finally:
        opened.close()


@pytest.mark.own_ray
def test_a_sigkilled_server_takes_its_engines_and_ray_along_mid_request(tmp_path, model_dir):
    """What a supervisor does when a stop takes too long: SIGKILL, here while a long request decodes.
    An engine core and its worker used to survive it (6 of 6 runs, ~2.9 GB each, ignoring SIGTERM)."""
    argv, port, _ = serve_argv(tmp_path, model_dir)
    tag, known = uuid.uuid4().hex, set()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, RUN_TAG: tag}
    )
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    long_request = {"prompt": "Write a very long story about a dragon.", "max_tokens": 900, "temperature": 1.0}
    try:
        printed = out.wait_for("Ctrl-C stops the server.", 300, proc)
        key = re.search(r"key\s+(alk_\S+)", printed).group(1)
        known = tree(psutil.Process(proc.pid))
        assert engine_processes(known), "the replica's engine runs in processes of its own"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            body = {**long_request, "stream": True}
            with client.stream("POST", "/v1/generate", json=body, headers={"Authorization": f"Bearer {key}"}) as stream:
                assert stream.status_code == 200
                deltas = 0
                for line in stream.iter_lines():
                    deltas += line.startswith("data: ")
                    if deltas >= 3:  # decoding: the engine is busy with it
                        break
                known |= tree(psutil.Process(proc.pid))
                proc.kill()
                proc.wait(30)
        left, waited = left_running(tag, known, GONE_BOUND_S)
    finally:
        clean_up(tag, known)
        if proc.poll() is None:
            proc.kill()
    print(f"SIGKILLed mid-request; every process it started gone {waited:.1f}s later")
    assert deltas >= 3
    assert not left, (left, err.text()[-3000:])
