"""The local servers' ports: outside the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import servers as infra


def test_free_ports_lie_below_the_ephemeral_range_and_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    monkeypatch.setattr(infra, "EPHEMERAL_RANGE", ranges)
    ports = [infra.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(40000 - 16384 <= port < 40000 for port in ports)
    with socket.socket() as sock:  # each is free to bind
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_not_handed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1026 60999")  # two candidates: 1024 and 1025
    monkeypatch.setattr(infra, "EPHEMERAL_RANGE", ranges)
    monkeypatch.setattr(infra, "_handed_out", set())
    with socket.socket() as busy:
        try:
            busy.bind(("127.0.0.1", 1024))
        except OSError:
            pytest.skip("cannot bind a port below 1025 here")
        busy.listen()
        assert infra.free_port() == 1025
        with pytest.raises(infra.InfraError, match="no free loopback port below 1026"):
            infra.free_port()
