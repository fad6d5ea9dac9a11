"""`aligner serve` as a user runs it: its own Ray, the printed curl answered, a clean stop on SIGTERM.

Runs before the shared app of this package exists (marker `own_ray`), so the Ray it starts
is the only one on the machine and "no Ray process left behind" can be checked exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

from .conftest import E2E_CONFIG, free_port

RAY_PROCESS = re.compile(r"ray::|raylet|gcs_server|ray/dashboard|VLLM::EngineCore")


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


@pytest.mark.own_ray
def test_aligner_serve_prints_a_working_curl_and_stops_cleanly(tmp_path, model_dir):
    assert not ray_processes(), "another Ray is running; this test must run before the shared app starts"
    port = free_port()
    config = tmp_path / "aligner.yaml"
    config.write_text(yaml.safe_dump({"engine": E2E_CONFIG["engine"], "replica_num_cpus": 0}))
    store = f"sqlite:///{tmp_path}/tenants.db"
    env = {**os.environ, "ALIGNER_TENANT_STORE": "sqlite:////nonexistent/ignored.db"}  # the flag wins
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve.cli",
            "serve",
            "--config",
            str(config),
            "--model",
            str(model_dir),
            "--http-port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--tenant-store",
            store,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        printed = out.wait_for("Ctrl-C stops the server.", 300, proc)
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
        # Everything the server started, by identity: an engine core's title is not always set.
        started = {(p.pid, p.create_time()) for p in psutil.Process(proc.pid).children(recursive=True)}
        assert len(started) >= 5, "Ray's processes, the replicas and an engine core"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err.text()[-3000:]
    assert "stopped" in err.text() and "Traceback" not in err.text()

    # The temporary key dies with the server; no Ray or engine process outlives it.
    from aligner.tenants import TenantStore

    opened = TenantStore.open(store)
    try:
        assert opened.authenticate(key) is None
    finally:
        opened.close()
    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert not ray_processes(), [psutil.Process(p).cmdline() for p in ray_processes() if psutil.pid_exists(p)]
    assert not [pid for pid, created in started if still_running(pid, created)]


def still_running(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
