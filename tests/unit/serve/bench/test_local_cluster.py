"""Ports for local servers: chosen where neither the kernel nor Ray picks ports by itself, checked free."""

import socket

import pytest

from serve.bench import local_cluster
from serve.bench.local_cluster import LOWEST_PORT, RAY_WORKER_PORTS, ephemeral_ports, free_port, port_ranges


def test_the_ranges_leave_out_the_ephemeral_ports_and_rays_worker_ports():
    ranges = port_ranges(range(32768, 61000))
    assert ranges == [range(20000, 32768), range(61000, 65536)]
    ports = {port for block in ranges for port in block}
    assert not ports & set(range(32768, 61000)) and not ports & set(RAY_WORKER_PORTS)
    assert min(ports) == LOWEST_PORT and max(ports) == 65535


def test_an_ephemeral_range_that_overlaps_rays_or_ends_the_port_space_is_left_out_too():
    assert port_ranges(range(15000, 25000)) == [range(25000, 65536)]
    assert port_ranges(range(40000, 65536)) == [range(20000, 40000)]
    assert port_ranges(range(1024, 65536)) == []
    assert port_ranges(range(1024, 65536), lowest=1024) == []
    assert port_ranges(range(30000, 65536), lowest=1024) == [range(1024, 10002), range(20000, 30000)]


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path):
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t50000\n")
    assert ephemeral_ports(str(setting)) == range(40000, 50001)
    assert ephemeral_ports(str(tmp_path / "missing")) == range(32768, 61000)  # Linux's default


def test_free_ports_are_outside_both_ranges_distinct_and_bindable():
    ephemeral = ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports), "one process never gets a port twice"
    for port in ports:
        assert port not in ephemeral and port not in RAY_WORKER_PORTS and port >= LOWEST_PORT
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # really free


def test_a_port_someone_listens_on_is_never_chosen(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(local_cluster, "port_ranges", lambda *args, **kwargs: [range(taken, taken + 1)])
        with pytest.raises(RuntimeError, match="no free port"):
            free_port()
