"""The local servers' ports: outside the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import socket
import subprocess
import sys
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


def test_stop_returns_once_a_server_deaf_to_sigterm_is_gone_and_its_port_free(
    tmp_path: Path,
) -> None:
    port = infra.free_port()
    deaf = (
        "import signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        "print('up', flush=True); time.sleep(60)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", deaf, str(port)], stdout=subprocess.PIPE, start_new_session=True
    )
    assert server.stdout is not None and server.stdout.readline() == b"up\n"
    (tmp_path / "deaf.pid").write_text(f"{server.pid}\n")
    assert infra.stop("deaf", tmp_path, timeout_s=1.0)
    assert server.poll() is not None  # reaped: no longer running
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert not (tmp_path / "deaf.pid").exists()
    assert not infra.stop("deaf", tmp_path)
