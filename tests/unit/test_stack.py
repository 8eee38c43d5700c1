"""``make up REPLICAS=n``: the processes of the stack and the settings of each."""

from __future__ import annotations

import stack


def test_one_process_per_service_by_default() -> None:
    processes = stack.processes(1)
    assert set(processes) == set(stack.SERVICES)
    assert processes["registration"] == ("registration", stack.PORTS["registration"])


def test_replicas_of_the_consuming_stages_have_ports_of_their_own() -> None:
    processes = stack.processes(4)
    for service in stack.SCALED:
        names = [name for name, (owner, _) in processes.items() if owner == service]
        assert names == [service, f"{service}-2", f"{service}-3", f"{service}-4"]
    assert [name for name, (owner, _) in processes.items() if owner == "ingestion"] == ["ingestion"]
    ports = [port for _, port in processes.values()]
    assert len(set(ports)) == len(ports)
    assert processes["inference-3"] == ("inference", stack.PORTS["inference"] + 200)


def test_a_replica_is_told_its_port_and_keeps_its_stage_s_identity() -> None:
    config = {
        "env": stack.environment(),
        "store_identities": {"worker": {"AccessKeyId": "w", "SecretAccessKey": "s"}},
    }
    env = stack.service_env(config, "worker", 8191)
    assert env["STAINLESS_WORKER__METRICS_PORT"] == "8191"
    assert env["STAINLESS_STORE__ACCESS_KEY"] == "w"
    shared = stack.service_env(config, "relay")
    assert shared["STAINLESS_RELAY__HTTP_PORT"] == str(stack.PORTS["relay"])
