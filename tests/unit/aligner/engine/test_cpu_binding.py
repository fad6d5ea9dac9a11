"""Which cores a CPU engine decodes on: topologies written as sysfs/procfs trees, no engine."""

import os
from pathlib import Path

import pytest

from aligner.engine import cpu_binding
from aligner.engine.cpu_binding import LogicalCpu, choose_cores, parse_cpu_list, quota_cpus
from aligner.errors import ConfigError


def cpus(layout: dict[int, tuple[int, int, int]]) -> list[LogicalCpu]:
    """{cpu id: (package, core, node)}"""
    return [LogicalCpu(i, (p, c), n) for i, (p, c, n) in layout.items()]


# Two NUMA nodes of two physical cores each, SMT-2: cpu i and i+8 are siblings.
SMT_NUMA = cpus(
    {0: (0, 0, 0), 1: (0, 1, 0), 2: (1, 0, 1), 3: (1, 1, 1), 8: (0, 0, 0), 9: (0, 1, 0), 10: (1, 0, 1), 11: (1, 1, 1)}
)
FLAT4 = cpus({i: (0, i, 0) for i in range(4)})


def test_cpu_lists_parse_as_the_kernel_writes_them():
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpu_list("5") == [5]
    assert parse_cpu_list("") == []


def test_quotas_of_cgroup_v2_and_v1():
    assert quota_cpus(cpu_max="400000 100000") == 4.0
    assert quota_cpus(cpu_max="150000 100000") == 1.5
    assert quota_cpus(cpu_max="max 100000") is None
    assert quota_cpus(cfs=("200000", "100000")) == 2.0
    assert quota_cpus(cfs=("-1", "100000")) is None
    assert quota_cpus() is None


def test_every_physical_core_of_the_first_node_one_thread_each():
    assert choose_cores(FLAT4, {0, 1, 2, 3}, None, None) == [0, 1, 2, 3]
    # SMT siblings share a core, and the second node is not used (memory stays local).
    assert choose_cores(SMT_NUMA, {0, 1, 2, 3, 8, 9, 10, 11}, None, None) == [0, 1]
    # The first node is the one of the lowest CPU this process may use.
    assert choose_cores(SMT_NUMA, {2, 3, 10, 11}, None, None) == [2, 3]


def test_the_affinity_and_the_quota_bound_the_cores():
    assert choose_cores(FLAT4, {1, 3}, None, None) == [1, 3]
    assert choose_cores(FLAT4, {0, 1, 2, 3}, 2.0, None) == [0, 1]
    assert choose_cores(FLAT4, {0, 1, 2, 3}, 2.5, None) == [0, 1]  # whole CPUs only
    assert choose_cores(FLAT4, {0, 1, 2, 3}, 0.5, None) == [0]  # never none


def test_engines_on_one_node_take_slices_of_their_own():
    every = {0, 1, 2, 3}
    assert choose_cores(FLAT4, every, None, None, share=(0, 2)) == [0, 1]
    assert choose_cores(FLAT4, every, None, None, share=(1, 2)) == [2, 3]
    assert choose_cores(FLAT4, every, None, 1, share=(3, 4)) == [3]
    # More engines than cores: each still gets one, round the cores.
    assert choose_cores(FLAT4, {0, 1}, None, None, share=(2, 3)) == [0]


def test_cpu_threads_sets_the_count_and_too_many_is_a_config_error():
    assert choose_cores(FLAT4, {0, 1, 2, 3}, None, 3) == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"engine.cpu_threads is 5, but this process may use 4 physical core\(s\)"):
        choose_cores(FLAT4, {0, 1, 2, 3}, None, 5)
    with pytest.raises(ConfigError, match="under its CPU quota of 2"):
        choose_cores(FLAT4, {0, 1, 2, 3}, 2.0, 3)
    with pytest.raises(ConfigError, match="no CPU"):
        choose_cores(FLAT4, {7}, None, None)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_topology_is_read_from_sysfs(tmp_path):
    files = {
        "devices/system/cpu/online": "0-3\n",
        "devices/system/node/node0/cpulist": "0,2\n",
        "devices/system/node/node1/cpulist": "1,3\n",
    }
    for cpu, core in ((0, 0), (1, 1), (2, 0), (3, 1)):
        files[f"devices/system/cpu/cpu{cpu}/topology/physical_package_id"] = "0\n"
        files[f"devices/system/cpu/cpu{cpu}/topology/core_id"] = f"{core}\n"
    found = cpu_binding.system_cpus(write(tmp_path, files))
    assert found == [
        LogicalCpu(0, (0, 0), 0),
        LogicalCpu(1, (0, 1), 1),
        LogicalCpu(2, (0, 0), 0),
        LogicalCpu(3, (0, 1), 1),
    ]


def test_the_quota_is_read_from_the_process_cgroup(tmp_path):
    v2 = write(
        tmp_path / "v2", {"proc/self/cgroup": "0::/kubepods/pod1\n", "cg/kubepods/pod1/cpu.max": "300000 100000\n"}
    )
    assert cpu_binding.own_quota(v2 / "proc", v2 / "cg") == 3.0
    v1 = write(
        tmp_path / "v1",
        {
            "proc/self/cgroup": "4:memory:/x\n3:cpu,cpuacct:/pod\n0::/\n",
            "cg/cpu,cpuacct/pod/cpu.cfs_quota_us": "200000\n",
            "cg/cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpu_binding.own_quota(v1 / "proc", v1 / "cg") == 2.0
    none = write(tmp_path / "none", {"proc/self/cgroup": "0::/\n", "cg/cpu.max": "max 100000\n"})
    assert cpu_binding.own_quota(none / "proc", none / "cg") is None


def test_odd_cgroup_files_mean_no_quota_rather_than_a_crash(tmp_path):
    assert quota_cpus(cpu_max="abc 100000") is None
    assert quota_cpus(cpu_max="100000 0") is None
    assert quota_cpus(cfs=("x", "100000")) is None
    odd = write(tmp_path, {"proc/self/cgroup": "\nnot a cgroup line\n0::/a\n", "cg/a/cpu.max": "max\n"})
    assert cpu_binding.own_quota(odd / "proc", odd / "cg") is None


def test_a_container_whose_cgroup_is_mounted_as_the_root_has_its_quota_found(tmp_path):
    v1 = write(
        tmp_path / "v1",
        {
            "proc/self/cgroup": "3:cpu,cpuacct:/kubepods/burstable/pod7/abc\n",
            "cg/cpu,cpuacct/cpu.cfs_quota_us": "400000\n",
            "cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpu_binding.own_quota(v1 / "proc", v1 / "cg") == 4.0
    v2 = write(
        tmp_path / "v2", {"proc/self/cgroup": "0::/system.slice/docker-abc.scope\n", "cg/cpu.max": "200000 100000\n"}
    )
    assert cpu_binding.own_quota(v2 / "proc", v2 / "cg") == 2.0


def test_a_binding_already_set_is_kept(monkeypatch):
    """A local cluster pins each Ray node's engine through the variable; an operator may too."""
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert cpu_binding.preset_cores() is None
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "auto")
    assert cpu_binding.preset_cores() is None
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1,3-4")
    assert cpu_binding.preset_cores() == [1, 3, 4]
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    assert cpu_binding.preset_cores() == []


def test_this_machine_gives_at_least_one_core_it_may_run_on():
    cores = cpu_binding.decoding_cores(None)
    assert cores and set(cores) <= os.sched_getaffinity(0)


def test_the_binding_is_set_while_vllm_starts_and_restored_after():
    env = {"VLLM_CPU_OMP_THREADS_BIND": "auto", "OMP_NUM_THREADS": "1"}
    with cpu_binding.bound_to([0, 1], env):
        assert env == {
            "VLLM_CPU_OMP_THREADS_BIND": "0,1",
            "OMP_NUM_THREADS": "2",
            "OMP_PLACES": "{0},{1}",
            "OMP_PROC_BIND": "close",
        }
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "auto", "OMP_NUM_THREADS": "1"}
    empty: dict[str, str] = {}
    with cpu_binding.bound_to([3], empty):
        assert empty == {
            "VLLM_CPU_OMP_THREADS_BIND": "3",
            "OMP_NUM_THREADS": "1",
            "OMP_PLACES": "{3}",
            "OMP_PROC_BIND": "close",
        }
    assert empty == {}


def test_an_operators_binding_is_kept_and_given_to_openmp_too():
    env = {"VLLM_CPU_OMP_THREADS_BIND": "2-3"}
    with cpu_binding.bound_to([2, 3], env, keep_preset=True):
        assert env == {
            "VLLM_CPU_OMP_THREADS_BIND": "2-3",
            "OMP_NUM_THREADS": "2",
            "OMP_PLACES": "{2},{3}",
            "OMP_PROC_BIND": "close",
        }
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "2-3"}
    nobind = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    with cpu_binding.bound_to([], nobind, keep_preset=True):
        assert nobind == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
