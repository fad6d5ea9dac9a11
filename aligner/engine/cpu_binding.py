"""Which cores a CPU engine decodes on: one OpenMP thread per physical core, each bound to its core.

vLLM's CPU backend binds its threads itself ("auto"), but keeps one core out for its scheduler
process and looks only at the process's CPU affinity. On a 2-core machine that halves decoding
(measured: best-of-4 at 8 clients, 1.31 vs 1.85 requests/s), and in a container whose CPU limit is a
quota rather than a cpuset it binds a thread to every core of the node, most of which the quota
then throttles. So the engine is given an explicit core list: the physical cores of the first NUMA
node this process may run on (as vLLM picks them), as many as the container's CPU quota allows, or
`cpu_threads` when set.

The engine core runs the model in its own process (vLLM's "uni" executor, see `Engine.start`) rather
than spawning a second worker process, which would import torch, transformers and vLLM once more (about
8 s of each start on 2 cores). vLLM binds threads only in the worker process it spawns, so here the
binding is given to the engine-core process itself, as OpenMP's own variables (OMP_NUM_THREADS,
OMP_PLACES, OMP_PROC_BIND) set while vLLM spawns it; they are read once, when that process loads OpenMP.
VLLM_CPU_OMP_THREADS_BIND carries the same list, for an engine run with vLLM's worker process.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aligner.errors import ConfigError

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
SYS = Path("/sys")


@dataclass(frozen=True)
class LogicalCpu:
    id: int
    core: tuple[int, int]  # (package, core id): logical CPUs sharing it are SMT siblings
    node: int


def parse_cpu_list(text: str) -> list[int]:
    """`0-3,8,10-11` (the kernel's list format) -> [0, 1, 2, 3, 8, 10, 11]."""
    ids: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def quota_cpus(cpu_max: str | None = None, cfs: tuple[str, str] | None = None) -> float | None:
    """CPUs a cgroup quota allows: cgroup v2 `cpu.max` ("400000 100000" or "max 100000") or v1
    (cfs_quota_us, cfs_period_us); None when there is no quota or the files say nothing sensible."""
    try:
        if cpu_max is not None:
            fields = cpu_max.split()
            if len(fields) == 2 and fields[0] != "max" and int(fields[1]) > 0:
                return int(fields[0]) / int(fields[1])
        if cfs is not None:
            quota, period = (int(v) for v in cfs)
            if quota > 0 and period > 0:
                return quota / period
    except ValueError:
        return None
    return None


def choose_cores(
    cpus: Sequence[LogicalCpu],
    allowed: set[int],
    quota: float | None,
    threads: int | None,
    share: tuple[int, int] = (0, 1),
) -> list[int]:
    """The cores to bind decoding threads to.

    The candidates are one logical CPU per physical core of the first NUMA node among `allowed`,
    lowest ids first, at most the quota's whole CPUs (at least 1). `share` = (index, count): this
    engine is number `index` of `count` engines on these cores (replicas on one node), so it takes
    its own slice of them. `threads` fixes the number (an error if there are not that many cores);
    None takes the slice's share of the candidates."""
    usable = sorted((c for c in cpus if c.id in allowed), key=lambda c: c.id)
    if not usable:
        raise ConfigError("this process may run on no CPU that the system lists")
    node = usable[0].node
    per_core: dict[tuple[int, int], int] = {}
    for cpu in usable:
        if cpu.node == node:
            per_core.setdefault(cpu.core, cpu.id)
    cores = sorted(per_core.values())
    if quota is not None:
        cores = cores[: max(1, math.floor(quota + 1e-9))]
    index, count = share
    if threads is None:
        threads = max(1, len(cores) // max(1, count))
    elif threads > len(cores):
        raise ConfigError(
            f"engine.cpu_threads is {threads}, but this process may use {len(cores)} physical core(s) of "
            f"NUMA node {node} ({','.join(map(str, cores))})"
            + ("" if quota is None else f" under its CPU quota of {quota:g}")
        )
    start = (index * threads) % len(cores)
    return (cores[start:] + cores[:start])[:threads]


# -- reading this machine ---------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def system_cpus(sys_root: Path = SYS) -> list[LogicalCpu]:
    """Every online logical CPU with its physical core and NUMA node, from sysfs."""
    node_of: dict[int, int] = {}
    for node_dir in sorted((sys_root / "devices/system/node").glob("node[0-9]*")):
        for cpu in parse_cpu_list(_read(node_dir / "cpulist") or ""):
            node_of[cpu] = int(node_dir.name[4:])
    online = _read(sys_root / "devices/system/cpu/online")
    ids = parse_cpu_list(online) if online else list(range(os.cpu_count() or 1))
    cpus = []
    for cpu in ids:
        topology = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        package, core = _read(topology / "physical_package_id"), _read(topology / "core_id")
        key = (int(package), int(core)) if package is not None and core is not None else (0, cpu)
        cpus.append(LogicalCpu(cpu, key, node_of.get(cpu, 0)))
    return cpus


def own_quota(proc_root: Path = Path("/proc"), cgroup_root: Path = SYS / "fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup (v2, else v1), or None. Inside a container the cgroup
    named in /proc/self/cgroup is often mounted as the root itself, so the root is asked too."""
    for line in (_read(proc_root / "self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.strip().lstrip("/")
        if hierarchy == "0":
            places = [cgroup_root / relative, cgroup_root]
            found = [quota_cpus(cpu_max=_read(p / "cpu.max")) for p in places]
        elif "cpu" in controllers.split(","):
            places = [cgroup_root / controllers / relative, cgroup_root / controllers]
            found = []
            for place in places:
                quota, period = _read(place / "cpu.cfs_quota_us"), _read(place / "cpu.cfs_period_us")
                found.append(quota_cpus(cfs=(quota, period)) if quota and period else None)
        else:
            continue
        quotas = [q for q in found if q is not None]
        if quotas:
            return min(quotas)
    return None


def preset_cores() -> list[int] | None:
    """A binding the operator (or a local cluster pinning its nodes) already set in
    VLLM_CPU_OMP_THREADS_BIND: its cores ([] for "nobind"), kept as they are; None when unset or "auto"."""
    preset = os.environ.get(BIND_VARIABLE, "auto").strip()
    if preset == "auto":
        return None
    if preset == "nobind":
        return []
    return [core for part in preset.split("|") for core in parse_cpu_list(part)]


def decoding_cores(threads: int | None, share: tuple[int, int] = (0, 1)) -> list[int]:
    """`choose_cores` for this process on this machine."""
    return choose_cores(system_cpus(), set(os.sched_getaffinity(0)), own_quota(), threads, share)


# Engines started at once in one process would read each other's binding from the environment (and
# take another's for an operator's preset): one start at a time, from the preset's reading on.
_STARTING = threading.Lock()


def openmp_variables(cores: Sequence[int]) -> dict[str, str]:
    """OpenMP's variables that bind one thread to each of `cores`, in order (none for no binding)."""
    if not cores:
        return {}
    return {
        "OMP_NUM_THREADS": str(len(cores)),
        "OMP_PLACES": ",".join(f"{{{core}}}" for core in cores),
        "OMP_PROC_BIND": "close",
    }


@contextmanager
def bound_to(
    cores: Sequence[int], environ: MutableMapping[str, str] | None = None, *, keep_preset: bool = False
) -> Iterator[None]:
    """The binding to `cores` in the environment while vLLM spawns its engine process (it reads it
    when it starts), restored after. `keep_preset`: VLLM_CPU_OMP_THREADS_BIND was set by the operator
    and is left as it is."""
    env = os.environ if environ is None else environ
    variables = openmp_variables(cores)
    if not keep_preset:
        variables[BIND_VARIABLE] = ",".join(map(str, cores))
    old = {name: env.get(name) for name in variables}
    env.update(variables)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value


@contextmanager
def engine_binding(threads: int | None, share: tuple[int, int] = (0, 1)) -> Iterator[list[int]]:
    """The cores of a CPU engine started inside this block, one start at a time: a binding already set
    is kept as it is, otherwise `decoding_cores` are bound for the start."""
    with _STARTING:
        preset = preset_cores()
        cores = decoding_cores(threads, share) if preset is None else preset
        with bound_to(cores, keep_preset=preset is not None):
            yield cores
