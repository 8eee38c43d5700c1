"""The chart ``helm/stainless`` rendered for every values file, checked on its YAML.

Kubernetes' own schemas (1.30, strict) validate every built-in kind; the custom
resources of KEDA, KubeRay, CloudNativePG, MinIO and Strimzi are skipped by name
(``CUSTOM_KINDS``) because kubernetes-validate has no schema for them.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from stainless.core.config import Settings, iter_setting_fields
from stainless.core.events.contracts import ConsumerGroup, Topic
from stainless.core.storage.access import grants
from stainless_training.kuberay import render_rayjob

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stainless"
VALUES_DIR = ROOT / "helm" / "values"
PROFILES = ("minimal", "production", "airgapped")
KUBERNETES = "1.30"
CUSTOM_KINDS = frozenset(
    {"ScaledObject", "RayJob", "Cluster", "Tenant", "Kafka", "KafkaNodePool"}
)  # not in kubernetes-validate's schemas: KEDA, KubeRay, CloudNativePG, MinIO, Strimzi
THIRD_PARTY_IMAGES = frozenset({"tritonserver", "mc"})  # Triton; MinIO's client (store access)
SERVICES = ("ingestion", "registration", "relay", "worker", "inference", "results", "trainer")
CONSUMED = {  # what each scaled consumer group reads (libs/stainless/stages)
    ConsumerGroup.REGISTRATION: {Topic.FIELDS_INGESTED},
    ConsumerGroup.INFERENCE: {Topic.CELLS_CROPPED, Topic.SLIDES_UPLOADED},
}

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def _values(profile: str) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overrides = yaml.safe_load((VALUES_DIR / f"{profile}.yaml").read_text())

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            out[key] = merge(base[key], value) if both else value
        return out

    return merge(defaults, overrides)


def _of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def _by_name(docs: list[Manifest], kind: str, suffix: str) -> Manifest:
    found = [d for d in _of_kind(docs, kind) if d["metadata"]["name"].endswith(f"-{suffix}")]
    assert len(found) == 1, f"{kind} *-{suffix}: {len(found)} found"
    return found[0]


JOB_ID = "0b4f9a2e-51c3-4d7e-9f00-1c2d3e4f5a6b"


def _rayjob(docs: list[Manifest], workers: int = 2) -> Manifest:
    """The RayJob the trainer would submit for JOB_ID (its own rendering of the template)."""
    template = _by_name(docs, "ConfigMap", "rayjob-template")["data"]["rayjob.yaml"]
    return render_rayjob(template, job_id=JOB_ID, workers=workers)


def _pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, component, pod spec) of every pod of the release: workloads and the RayJob
    template's groups (its component: training)."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            yield where, component, doc["spec"]["template"]["spec"]
    if any(d["metadata"]["name"].endswith("-rayjob-template") for d in _of_kind(docs, "ConfigMap")):
        rayjob = _rayjob(docs)["spec"]
        cluster = rayjob["rayClusterSpec"]
        yield "RayJob/submitter", "training-submitter", rayjob["submitterPodTemplate"]["spec"]
        yield "RayJob/head", "training", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster["workerGroupSpecs"]:
            yield f"RayJob/{group['groupName']}", "training", group["template"]["spec"]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("profile", PROFILES)
def test_lint(helm: Path, profile: str) -> None:
    done = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "-f", str(VALUES_DIR / f"{profile}.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_values_render(render: Render) -> None:
    kinds = {d["kind"] for d in render()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds


@pytest.mark.parametrize("profile", PROFILES)
def test_manifests_validate_against_kubernetes(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    validated = set()
    for doc in profiles[profile]:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        validated.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= validated
    # The RayJob itself is a custom resource; its pod templates are plain pods.
    for name, _, spec in _pod_specs(profiles[profile]):
        if name.startswith("RayJob/"):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}
            kubernetes_validate.validate(pod, KUBERNETES, strict=True)


def test_custom_kinds_rendered_are_only_the_known_ones(
    profiles: dict[str, list[Manifest]],
) -> None:
    builtin_groups = {"v1", "apps/v1", "batch/v1", "autoscaling/v2", "networking.k8s.io/v1"}
    builtin_groups.add("rbac.authorization.k8s.io/v1")
    for docs in profiles.values():
        for doc in docs:
            if doc["apiVersion"] not in builtin_groups:
                assert doc["kind"] in CUSTOM_KINDS, doc["kind"]


def test_triton_requests_a_gpu_and_tolerates_the_gpu_taint(
    profiles: dict[str, list[Manifest]],
) -> None:
    triton = _by_name(profiles["production"], "Deployment", "triton")["spec"]["template"]["spec"]
    (container,) = triton["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert any(
        t["key"] == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
        for t in triton["tolerations"]
    )
    assert triton["nodeSelector"]
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert container["image"].endswith("-py3")


def test_triton_on_cpu_in_the_minimal_profile(profiles: dict[str, list[Manifest]]) -> None:
    triton = _by_name(profiles["minimal"], "Deployment", "triton")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in triton["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("profile", PROFILES)
def test_triton_loads_explicit_models_from_the_object_store(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    triton = _by_name(profiles[profile], "Deployment", "triton")["spec"]["template"]["spec"]
    (container,) = triton["containers"]
    args = container["args"]
    repository = next(a for a in args if a.startswith("--model-repository="))
    assert repository.startswith("--model-repository=s3://")
    assert "--model-control-mode=explicit" in args
    assert "--load-model=stain_confidence" in args
    credentials = {e["name"]: e for e in container["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in credentials[name]["valueFrom"]


def test_triton_reads_minio_and_aws_repositories() -> None:
    assert _values("production")["objectStore"]["aws"] is True


@pytest.mark.parametrize("profile", ["production", "airgapped"])
def test_keda_triggers_name_real_topics_and_consumer_groups(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    values = _values(profile)
    prefix, partitions = values["bus"]["topicPrefix"], values["bus"]["partitions"]
    scaled = _of_kind(profiles[profile], "ScaledObject")
    assert {s["metadata"]["name"].rsplit("-", 1)[-1] for s in scaled} == {
        "registration",
        "inference",
    }
    assert not _of_kind(profiles[profile], "HorizontalPodAutoscaler")
    for obj in scaled:
        assert obj["spec"]["maxReplicaCount"] <= partitions
        groups, topics = set(), set()
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert meta["topic"].startswith(prefix)
            topics.add(Topic(meta["topic"].removeprefix(prefix)))  # ValueError: not a topic
            groups.add(ConsumerGroup(meta["consumerGroup"]))
        (group,) = groups
        assert topics == CONSUMED[group], f"{obj['metadata']['name']} scales on {topics}"


def test_consumer_replicas_are_capped_at_partitions(render: Render) -> None:
    hpa = _of_kind(render("--set", "bus.partitions=2"), "HorizontalPodAutoscaler")
    assert {h["spec"]["maxReplicas"] for h in hpa} == {2}
    keda = render("--set", "bus.partitions=3", "--set", "keda.enabled=true")
    assert {s["spec"]["maxReplicaCount"] for s in _of_kind(keda, "ScaledObject")} == {3}
    for deployment in _of_kind(keda, "Deployment"):
        name = deployment["metadata"]["name"]
        scaled = name.endswith(("-registration", "-inference"))
        assert ("replicas" in deployment["spec"]) is not scaled, name


@pytest.mark.parametrize("profile", PROFILES)
def test_no_container_runs_as_root_or_without_limits(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    specs = list(_pod_specs(profiles[profile]))
    assert len(specs) >= 8
    for name, _, spec in specs:
        pod = spec.get("securityContext", {})
        for container in _containers(spec):
            where = f"{name}/{container['name']}"
            ctx = {**pod, **container.get("securityContext", {})}
            assert ctx.get("runAsNonRoot") is True, where
            assert ctx.get("runAsUser", 0) != 0, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), f"{where}: limits {limits}"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_has_both_probes(profiles: dict[str, list[Manifest]], profile: str) -> None:
    deployments = _of_kind(profiles[profile], "Deployment")
    names = {d["metadata"]["name"].removeprefix("stainless-") for d in deployments}
    expected = {*SERVICES, "triton"}
    if _values(profile)["tasks"]["eager"]:
        expected.remove("worker")  # image tasks run inside the consumers
    assert names == expected
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            live = container["livenessProbe"]["httpGet"]
            ready = container["readinessProbe"]["httpGet"]
            if container["name"] == "triton":
                assert (live["path"], ready["path"]) == ("/v2/health/live", "/v2/health/ready")
            else:
                assert (live["path"], ready["path"]) == ("/health/live", "/health/ready")
                assert live["port"] == ready["port"] == "http"


SENTINELS = {
    "postgres.external.url": "postgresql+psycopg://stainless:Sentinel-db-pass@db:5432/stainless",
    "objectStore.accessKey": "Sentinel-access-key",
    "objectStore.secretKey": "Sentinel-secret-key",
    "tasks.brokerUrl": "redis://:Sentinel-redis@redis:6379/0",
    "tasks.resultBackend": "redis://:Sentinel-redis2@redis:6379/1",
    "bus.securityProtocol": "SASL_SSL",
    **{
        f"bus.saslPasswords.{w}": f"Sentinel-sasl-{w}"
        for w in ("registration", "relay", "inference", "trainer")
    },
}


def _secret_settings() -> set[str]:
    """Every SecretStr field of Settings, as its environment variable."""
    names = set()
    for block, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        for field, sub in model.model_fields.items():
            if sub.annotation is SecretStr:
                names.add(f"STAINLESS_{block.upper()}__{field.upper()}")
    return names


@pytest.mark.parametrize("profile", [*PROFILES, "sentinels"])
def test_secrets_never_appear_in_config_maps(
    render: Render, profiles: dict[str, list[Manifest]], profile: str
) -> None:
    if profile == "sentinels":
        docs = render(*[a for k, v in SENTINELS.items() for a in ("--set-string", f"{k}={v}")])
    else:
        docs = profiles[profile]
    secrets = _of_kind(docs, "Secret")
    secret_values = {
        str(v)
        for s in secrets
        for v in s.get("stringData", {}).values()
        if len(str(v)) >= 12  # not the user names
    }
    secret_values |= {"Sentinel"}
    secret_keys = _secret_settings() | {"STAINLESS_DATABASE__URL"}
    assert {"STAINLESS_STORE__SECRET_KEY", "STAINLESS_BUS__SASL_PASSWORD"} <= secret_keys
    for config_map in _of_kind(docs, "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert key not in secret_keys, f"{config_map['metadata']['name']}: {key}"
            for secret in secret_values:
                assert secret not in value, f"{config_map['metadata']['name']}/{key}"
    if profile == "sentinels":  # every secret setting is in some workload's Secret
        assert secret_keys <= {key for s in secrets for key in s.get("stringData", {})}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("STAINLESS_STORE__SECRET_KEY", "is a secret setting"),
        ("STAINLESS_BUS__PARTITIONS", "is set by the chart from its own value"),
    ],
)
def test_settings_refuse_secrets_and_chart_owned_keys(
    helm: Path, setting: str, message: str
) -> None:
    done = subprocess.run(
        [str(helm), "template", "s", str(CHART), "--set", f"settings.{setting}=3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_config_map_holds_only_real_settings(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    """A STAINLESS_* variable that names no setting stops every service at start."""
    known = {env for env, _, _ in iter_setting_fields()}
    settings = _by_name(profiles[profile], "ConfigMap", "settings")["data"]
    assert set(settings) <= known, set(settings) - known
    assert settings["STAINLESS_BUS__TOPIC_PREFIX"] == _values(profile)["bus"]["topicPrefix"]
    for doc in _of_kind(profiles[profile], "Deployment"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"].startswith("STAINLESS_"):
                    assert env["name"] in known


def test_wrong_type_fails_through_the_schema(helm: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('ingestion:\n  replicas: "two"\n')
    done = subprocess.run(
        [str(helm), "template", "s", str(CHART), "-f", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert "/ingestion/replicas" in done.stderr
    assert "want integer" in done.stderr


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ("keda.enabled=yes", "/keda/enabled"),
        ("triton.gpus=-1", "/triton/gpus"),
        ("bus.partitions=0", "/bus/partitions"),
        ("ingestion.replica=2", "/ingestion"),  # a typo: unknown keys are refused
    ],
)
def test_schema_refuses_bad_values(helm: Path, setting: str, where: str) -> None:
    flag = "--set-string" if setting.endswith("yes") else "--set"
    done = subprocess.run(
        [str(helm), "template", "s", str(CHART), flag, setting],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert where in done.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_rayjob_template_fills_in(profiles: dict[str, list[Manifest]], profile: str) -> None:
    job = _rayjob(profiles[profile], workers=3)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"]["name"] == "retrain-0b4f9a2e51c34d7e"
    assert (
        job["spec"]["entrypoint"]
        == f"stainless-train-job {JOB_ID} --rayjob retrain-0b4f9a2e51c34d7e"
    )
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    (workers,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["maxReplicas"] == 3
    worker = workers["template"]["spec"]
    limits = worker["containers"][0]["resources"]["limits"]
    if profile == "production":
        assert int(limits["nvidia.com/gpu"]) == 1
        assert any(t["key"] == "nvidia.com/gpu" for t in worker["tolerations"])
    image = worker["containers"][0]["image"]
    assert image.rsplit(":", 1)[0].endswith("/stainless-training")


@pytest.mark.parametrize("profile", PROFILES)
def test_images_are_the_dockerfiles_of_the_repository(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    registry = _values(profile)["global"]["imageRegistry"]
    for name, _, spec in _pod_specs(profiles[profile]):
        for container in _containers(spec):
            image = container["image"]
            if registry:
                assert image.startswith(f"{registry}/"), f"{name}: {image}"
            repository = image.rsplit(":", 1)[0].rsplit("/", 1)[-1]
            if repository in THIRD_PARTY_IMAGES:
                continue
            service = repository.removeprefix("stainless-")
            folder = ROOT / ("training" if service == "training" else f"services/{service}")
            assert (folder / "Dockerfile").is_file(), f"{name}: {image}"


@pytest.mark.parametrize("profile", PROFILES)
def test_network_policies_admit_only_the_callers(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    docs = profiles[profile]
    policies = _of_kind(docs, "NetworkPolicy")
    deny = _by_name(docs, "NetworkPolicy", "default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]
    selected = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in policies
    }
    for deployment in _of_kind(docs, "Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component in selected, component
    triton = _by_name(docs, "NetworkPolicy", "triton")["spec"]["ingress"]
    callers = triton[0]["from"][0]["podSelector"]["matchLabels"]
    assert callers["app.kubernetes.io/component"] == "inference"
    for consumer in ("registration", "relay", "inference"):
        for rule in _by_name(docs, "NetworkPolicy", consumer)["spec"].get("ingress", []):
            assert rule.get("from"), f"{consumer} admits anyone"
    ray = _by_name(docs, "NetworkPolicy", "training")["spec"]["ingress"]
    peers = [p["podSelector"]["matchLabels"] for p in ray[0]["from"]]
    assert [p["app.kubernetes.io/component"] for p in peers] == ["training"]  # one another
    assert "ports" not in ray[0]
    dashboard = [{"port": 8265, "protocol": "TCP"}]
    assert ray[1]["ports"] == ray[2]["ports"] == dashboard  # the rest: the dashboard only
    (submitter,) = ray[1]["from"]
    labels = submitter["podSelector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "training-submitter"
    pod = _rayjob(docs)["spec"]["submitterPodTemplate"]
    assert pod["metadata"]["labels"].items() >= labels.items()  # the submitter KubeRay starts
    assert "command" not in pod["spec"]["containers"][0]  # KubeRay's ray job submit
    assert ray[2]["from"] == _values(profile)["networkPolicy"]["rayFrom"]  # the operator
    for rule in ray:
        assert all(peer.get("podSelector") for peer in rule["from"]), rule  # never anyone
    if _values(profile)["networkPolicy"]["egress"]["restrict"]:
        assert _by_name(docs, "NetworkPolicy", "egress")["spec"]["policyTypes"] == ["Egress"]


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_use_their_own_service_account_and_only_the_trainer_a_token(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    accounts = {a["metadata"]["name"] for a in _of_kind(profiles[profile], "ServiceAccount")}
    for doc in _of_kind(profiles[profile], "Deployment"):
        spec = doc["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == doc["metadata"]["name"]
        assert spec["serviceAccountName"] in accounts
        trainer = doc["metadata"]["name"] == "stainless-trainer"
        assert spec["automountServiceAccountToken"] is trainer


@pytest.mark.parametrize("profile", PROFILES)
def test_trainer_submits_the_mounted_rayjob_template_and_may_only_create_rayjobs(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    docs = profiles[profile]
    spec = _by_name(docs, "Deployment", "trainer")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["stainless-trainer"]
    assert container["image"].rsplit(":", 1)[0].endswith("/stainless-training")
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = Path(env["STAINLESS_RAY__RAYJOB_TEMPLATE"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    template = _by_name(docs, "ConfigMap", "rayjob-template")
    assert volume["configMap"]["name"] == template["metadata"]["name"]
    assert path.name in template["data"]
    role = _by_name(docs, "Role", "trainer")
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get"]}
    ]
    binding = _by_name(docs, "RoleBinding", "trainer")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"]


def test_trainer_without_the_rayjob_template_is_refused(helm: Path) -> None:
    done = subprocess.run(
        [str(helm), "template", "s", str(CHART), "--set", "training.rayJob.enabled=false"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "trainer.enabled needs training.rayJob.enabled" in done.stderr


def test_operator_resources_follow_their_conditions(profiles: dict[str, list[Manifest]]) -> None:
    kinds = {name: {d["kind"] for d in docs} for name, docs in profiles.items()}
    assert {"Cluster", "Tenant", "Kafka", "KafkaNodePool"} <= kinds["minimal"]
    assert not {"Cluster", "Tenant", "Kafka", "KafkaNodePool"} & kinds["production"]
    settings = _by_name(profiles["minimal"], "ConfigMap", "settings")["data"]
    assert settings["STAINLESS_BUS__BOOTSTRAP_SERVERS"] == "stainless-kafka-kafka-bootstrap:9092"
    assert settings["STAINLESS_STORE__ENDPOINT"] == "stainless-minio-hl:9000"
    (app,) = [
        s
        for s in _of_kind(profiles["minimal"], "Secret")
        if s["metadata"]["name"] == "stainless-relay-secrets"
    ]
    (pg,) = [
        s
        for s in _of_kind(profiles["minimal"], "Secret")
        if s["metadata"]["name"] == "stainless-postgres-app"
    ]
    password = pg["stringData"]["password"]
    url = app["stringData"]["STAINLESS_DATABASE__URL"]
    assert url == f"postgresql+psycopg://stainless:{password}@stainless-postgres-rw:5432/stainless"


SECRET_SETTINGS = {
    "ingestion": {
        "STAINLESS_DATABASE__URL",
        "STAINLESS_STORE__ACCESS_KEY",
        "STAINLESS_STORE__SECRET_KEY",
    },
    "relay": {"STAINLESS_DATABASE__URL"},
    "migrations": {"STAINLESS_DATABASE__URL"},
    "results": {
        "STAINLESS_DATABASE__URL",
        "STAINLESS_STORE__ACCESS_KEY",
        "STAINLESS_STORE__SECRET_KEY",
    },
    "triton": {"STAINLESS_STORE__ACCESS_KEY", "STAINLESS_STORE__SECRET_KEY"},
}
"""What some workloads may read; the rest must at least never see another's secrets."""


def _secret_refs(spec: Manifest) -> set[tuple[str, str | None]]:
    """(Secret name, key or None for all of it) every container and volume of a pod reads."""
    refs: set[tuple[str, str | None]] = set()
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                refs.add((source["secretRef"]["name"], None))
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"]))
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            refs.add((volume["secret"]["secretName"], None))
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                name, items = source["secret"]["name"], source["secret"].get("items")
                refs |= {(name, item["key"]) for item in items} if items else {(name, None)}
    return refs


@pytest.mark.parametrize("profile", ["minimal", "airgapped"])
def test_no_pod_reads_another_workloads_secrets(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    docs = profiles[profile]
    own = {s["metadata"]["name"]: s for s in _of_kind(docs, "Secret")}
    seen: set[str] = set()
    for _, component, spec in _pod_specs(docs):
        refs = _secret_refs(spec)
        stainless = {(name, key) for name, key in refs if name.endswith("-secrets")}
        if not stainless or component == "store-access":  # its own test: store keys only
            continue
        seen.add(component)
        names = {name for name, _ in stainless}
        # Inference's init container fetches the manifest with Triton's store credentials.
        allowed = {f"stainless-{component}-secrets"} | (
            {"stainless-triton-secrets"} if component == "inference" else set()
        )
        assert names <= allowed, f"{component} reads {names - allowed}"
        assert all(key is not None for _, key in stainless), f"{component} mounts a whole Secret"
        keys = {key for name, key in stainless if name == f"stainless-{component}-secrets"}
        assert keys == set(own[f"stainless-{component}-secrets"]["stringData"]), component
        if component in SECRET_SETTINGS:
            assert keys == SECRET_SETTINGS[component], component
    assert {"ingestion", "relay", "results", "inference", "migrations", "training"} <= seen
    relay = own["stainless-relay-secrets"]["stringData"]
    assert set(relay) == {"STAINLESS_DATABASE__URL"}  # the relay holds no store key


STORE_KEYS = {"STAINLESS_STORE__ACCESS_KEY", "STAINLESS_STORE__SECRET_KEY"}


@pytest.mark.parametrize("profile", ["minimal", "airgapped"])
def test_each_workload_has_its_own_store_identity_and_policy(
    profiles: dict[str, list[Manifest]], profile: str
) -> None:
    docs = profiles[profile]
    identities = {
        s["metadata"]["name"].removeprefix("stainless-").removesuffix("-secrets"): s["stringData"]
        for s in _of_kind(docs, "Secret")
        if set(s.get("stringData", {})) >= STORE_KEYS
    }
    root = _by_name(docs, "Secret", "minio-env")["stringData"]
    users = [i["STAINLESS_STORE__ACCESS_KEY"] for i in identities.values()]
    passwords = [i["STAINLESS_STORE__SECRET_KEY"] for i in identities.values()]
    assert len(set(users)) == len(set(passwords)) == len(identities) >= 6
    assert root["accessKey"] not in users and root["secretKey"] not in passwords
    # The store-access Job grants each of them the policy `stainless store policies` writes.
    job = _by_name(docs, "Job", "store-access")["spec"]["template"]["spec"]
    (init,) = job["initContainers"]
    assert init["command"] == ["stainless", "store", "policies", "--out", "/policies"]
    script = job["containers"][0]["command"][-1]
    (loop,) = re.findall(r"for workload in ([\w ]+); do", script)
    assert set(loop.split()) == set(identities) <= set(grants(Settings()))
    assert 'mc admin policy attach store "stainless-$workload" --user "$user"' in script
    reads = _secret_refs(job)
    assert {key for name, key in reads if name.endswith("-secrets")} == STORE_KEYS
    assert {name for name, _ in reads if name.endswith("-secrets")} == {
        f"stainless-{w}-secrets" for w in identities
    }
    # The root user: the Tenant's configuration and this Job, no workload's pod.
    for where, component, spec in _pod_specs(docs):
        if component != "store-access":
            assert not any("minio-env" in name for name, _ in _secret_refs(spec)), where


def test_workloads_use_their_own_external_credentials(render: Render) -> None:
    docs = render(
        "--set-string",
        "objectStore.credentials.ingestion.accessKey=ingest-key",
        "--set-string",
        "objectStore.credentials.ingestion.secretKey=ingest-secret",
        "--set-string",
        "objectStore.accessKey=shared",
        "--set-string",
        "objectStore.secretKey=shared-secret",
    )
    secrets = {s["metadata"]["name"]: s["stringData"] for s in _of_kind(docs, "Secret")}
    assert secrets["stainless-ingestion-secrets"]["STAINLESS_STORE__ACCESS_KEY"] == "ingest-key"
    assert secrets["stainless-results-secrets"]["STAINLESS_STORE__ACCESS_KEY"] == "shared"
    assert not [d for d in _of_kind(docs, "Job") if "store-access" in d["metadata"]["name"]]
    settings = _by_name(docs, "ConfigMap", "settings")["data"]
    assert settings["STAINLESS_STORE__CREATE_BUCKET"] == "false"  # the operator's bucket


def test_each_workload_on_the_bus_has_its_own_sasl_password(render: Render) -> None:
    docs = render(*[a for k, v in SENTINELS.items() for a in ("--set-string", f"{k}={v}")])
    passwords = {
        s["metadata"]["name"]: s["stringData"].get("STAINLESS_BUS__SASL_PASSWORD")
        for s in _of_kind(docs, "Secret")
        if s["metadata"]["name"].endswith("-secrets")
    }
    on_bus = {"registration", "relay", "inference", "trainer"}
    for name, password in passwords.items():
        workload = name.removeprefix("stainless-").removesuffix("-secrets")
        assert password == (f"Sentinel-sasl-{workload}" if workload in on_bus else None), name


def test_ray_clusters_of_training_jobs_authenticate_with_a_token(
    profiles: dict[str, list[Manifest]],
) -> None:
    (template,) = [
        d for d in _of_kind(profiles["minimal"], "ConfigMap") if "rayjob.yaml" in d.get("data", {})
    ]
    rayjob = yaml.safe_load(template["data"]["rayjob.yaml"])
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert "RAY_AUTH_MODE" not in template["data"]["rayjob.yaml"]  # never switched off


def test_production_takes_its_secrets_from_an_existing_secret(
    profiles: dict[str, list[Manifest]],
) -> None:
    assert not _of_kind(profiles["production"], "Secret")
    for doc in _of_kind(profiles["production"], "Deployment"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            refs = [
                e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e
            ]
            env = [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "valueFrom" in e
            ]
            assert set(refs + env) == {"stainless-secrets"}


def test_every_value_is_documented() -> None:
    """helm-docs style: every leaf value has a `# --` comment, on itself or on a parent."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$")
    significant = [
        i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")
    ]
    stack: list[tuple[int, bool]] = []
    undocumented = []
    for position, index in enumerate(significant):
        match = key.match(lines[index])
        if not match:
            continue  # list items and flow values belong to the key above
        indent, name, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[index - 1].strip() if index else ""
        documented = above.startswith("# --") or any(doc for _, doc in stack)
        following = significant[position + 1] if position + 1 < len(significant) else None
        nested = following is not None and (
            len(lines[following]) - len(lines[following].lstrip()) > indent
        )
        is_parent = not rest and nested and key.match(lines[following] or "") is not None
        if not is_parent and not documented:
            undocumented.append(f"line {index + 1}: {name}")
        stack.append((indent, above.startswith("# --")))
    assert not undocumented, undocumented


def test_the_apis_serve_metrics_apart_from_their_clients(
    profiles: dict[str, list[Manifest]],
) -> None:
    docs = profiles["production"]
    settings = next(
        d["data"]
        for d in _of_kind(docs, "ConfigMap")
        if d["metadata"]["name"] == "stainless-settings"
    )
    for name, api, metrics in (("ingestion", 8080, 8092), ("results", 8083, 8093)):
        (deployment,) = [
            d for d in _of_kind(docs, "Deployment") if d["metadata"]["name"] == f"stainless-{name}"
        ]
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert ports == {"http": api, "metrics": metrics}
        assert settings[f"STAINLESS_{name.upper()}__METRICS_PORT"] == str(metrics)


def test_the_notifier_runs_the_relay_image_with_its_webhook_and_its_own_secret(
    render: Render,
) -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-notifier")]  # off
    docs = render(
        "--set", "notifier.enabled=true",
        "--set", "notifier.webhookUrl=https://lis.example/stainless",
        "--set", "notifier.authorization=Bearer Sentinel-hook",
    )  # fmt: skip
    deployment = _by_name(docs, "Deployment", "notifier")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["stainless-notifier"]
    assert "/stainless-relay:" in container["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STAINLESS_NOTIFY__WEBHOOK_URL"]["value"] == "https://lis.example/stainless"
    assert env["STAINLESS_NOTIFY__AUTHORIZATION"]["valueFrom"]["secretKeyRef"]["name"].endswith(
        "-notifier-secrets"
    )
    secret = _by_name(docs, "Secret", "notifier-secrets")["stringData"]
    assert set(secret) == {"STAINLESS_DATABASE__URL", "STAINLESS_NOTIFY__AUTHORIZATION"}
    assert secret["STAINLESS_NOTIFY__AUTHORIZATION"] == "Bearer Sentinel-hook"
    settings = _by_name(docs, "ConfigMap", "settings")["data"]
    assert settings["STAINLESS_NOTIFY__HTTP_PORT"] == "8094"
    assert "Sentinel-hook" not in json.dumps([d for d in docs if d["kind"] != "Secret"])
