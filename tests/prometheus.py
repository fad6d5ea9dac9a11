"""A real Prometheus (Debian's `prometheus`, which `make test` installs) for tests: started on a free port
with a scrape config of the test's own, queried through its HTTP API, stopped with the test."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from serve.bench.local_cluster import free_port

START_S = 60.0


class Prometheus:
    def __init__(self, directory: Path, scrape: dict, rule_files: list[Path], scrape_interval_s: float = 1.0):
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: install Debian's prometheus package (make test does)"
        interval = f"{round(scrape_interval_s * 1000)}ms"  # Prometheus's durations have no decimals
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [scrape],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        # A port another program took between the check and the bind ends the process: try fresh ones.
        for _ in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with self.log.open("w") as log:
                self.process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={directory / 'prometheus.yml'}",
                        f"--storage.tsdb.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._ready():
                return
            self.stop()
            if "address already in use" not in self.log.read_text():
                break
        raise AssertionError(f"prometheus did not start:\n{self.log.read_text()[-3000:]}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params) -> dict:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", f"{path} {params}: {reply.text}"
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The instant vector (or scalar, as one unlabelled sample) `expr` evaluates to at `at` (now)."""
        data = self.api("query", query=expr, time=f"{time.time() if at is None else at:.3f}")
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for_scrape_after(self, moment: float, timeout_s: float = 60.0) -> None:
        """Until a scrape that began after `moment` (wall clock) has been stored."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            targets = self.api("targets")["activeTargets"]
            if targets and all(t["health"] == "up" and _parse_time(t["lastScrape"]) > moment for t in targets):
                return
            time.sleep(0.25)
        raise AssertionError(f"no scrape after {moment}: {self.api('targets')['activeTargets']}")


def finite(samples: list[dict]) -> list[float]:
    return [float(s["value"][1]) for s in samples if math.isfinite(float(s["value"][1]))]


def _parse_time(text: str) -> float:
    """Prometheus's RFC 3339 times (nanoseconds, `Z` or an offset) as a Unix time."""
    from datetime import datetime

    head, _, rest = text.partition(".")
    digits = "".join(c for c in rest if c.isdigit())
    zone = rest[len(digits) :] or "Z"
    stamp = datetime.fromisoformat(f"{head}{zone.replace('Z', '+00:00')}")
    return stamp.timestamp() + (float(f"0.{digits}") if digits else 0.0)
