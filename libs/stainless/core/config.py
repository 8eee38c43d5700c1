"""Typed settings for every Stainless process.

Settings come in blocks (database, store, bus, each stage's own, ...). Each service has a
settings class of its own (``ProcessSettings`` with the blocks it uses, next to its stage's
``build``) and reads only those; :class:`Settings` holds every block, for the command line
and the embedded demo, which hand each stage its part with :func:`part`. The class is built
from the environment in the process's composition root and passed down by constructor.
Every field is reachable as an environment variable with the prefix ``STAINLESS_`` and
``__`` between nested blocks, e.g. ``STAINLESS_BUS__BACKEND=kafka``.

A variable that starts with ``STAINLESS_`` but names no setting of any process (so one
shared environment can serve every service), or a value that does not parse, stops the
process at start with a :class:`SettingsError` that names the variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from stainless.domain.differential import ClinicalRules, ProportionRule
from stainless.domain.vocabulary import PATHOLOGICAL

ENV_PREFIX = "STAINLESS_"
ENV_NESTED_DELIMITER = "__"


class SettingsError(ValueError):
    """Raised when the environment holds an unknown or malformed setting."""


class StoreBackend(StrEnum):
    LOCAL = "local"
    S3 = "s3"


class BusBackend(StrEnum):
    MEMORY = "memory"
    KAFKA = "kafka"


class KafkaSecurity(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class InferenceBackend(StrEnum):
    LOCAL = "local"
    TRITON = "triton"


class TritonProtocol(StrEnum):
    GRPC = "grpc"
    HTTP = "http"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class _Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSettings(_Block):
    """Relational database (SQLModel): SQLite file by default, Postgres in production."""

    url: str = Field(
        default="sqlite:///out/stainless.db",
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/stainless",
    )
    echo: bool = Field(default=False, description="Log every SQL statement.")
    pool_size: int = Field(default=5, ge=1, description="Connection pool size (Postgres).")


class StoreSettings(_Block):
    """Object store for images and artefacts: a local directory or S3/MinIO."""

    backend: StoreBackend = Field(default=StoreBackend.LOCAL, description="local or s3.")
    root: Path = Field(default=Path("out/store"), description="Directory of the local store.")
    endpoint: str = Field(
        default="127.0.0.1:9000",
        pattern=r"^[^:/\s]+(:\d{1,5})?$",
        description="S3 endpoint host:port (no scheme: secure says whether TLS is used).",
    )
    bucket: str = Field(default="stainless", min_length=3, description="S3 bucket name.")
    access_key: str = Field(default="stainless", description="S3 access key.")
    secret_key: SecretStr = Field(default=SecretStr("stainless-secret"), description="S3 secret.")
    secure: bool = Field(default=False, description="Use TLS for the S3 endpoint.")
    region: str | None = Field(default=None, description="S3 region, if the server needs one.")
    create_bucket: bool = Field(
        default=True,
        description="Create the bucket when missing; off where the operator manages it and "
        "each service's identity may use only its own prefixes.",
    )
    presign_expiry_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="Lifetime of presigned GET URLs."
    )


class BusSettings(_Block):
    """Event bus: in-process queue by default, Kafka in production."""

    backend: BusBackend = Field(default=BusBackend.MEMORY, description="memory or kafka.")
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    topic_prefix: str = Field(
        default="stainless.",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix of every topic name.",
    )
    partitions: int = Field(default=6, ge=1, description="Partitions of topics we create.")
    max_attempts: int = Field(
        default=3, ge=1, description="Handler tries before an event goes to <topic>.dlq."
    )
    retry_backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles.")
    session_timeout_ms: int = Field(default=10000, ge=1000, description="Consumer session timeout.")
    heartbeat_interval_ms: int = Field(
        default=3000, ge=100, description="Consumer heartbeat interval."
    )
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Produce acknowledgement wait; also the wait for the broker when a topic is read "
            "(stainless dlq)."
        ),
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas of the topics we create (3 in production)."
    )
    min_insync_replicas: int | None = Field(
        default=None, ge=1, description="min.insync.replicas of the topics we create."
    )
    security_protocol: KafkaSecurity = Field(
        default=KafkaSecurity.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: SaslMechanism = Field(
        default=SaslMechanism.SCRAM_SHA_512, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str = Field(default="", description="SASL user (the service's own).")
    sasl_password: SecretStr = Field(default=SecretStr(""), description="SASL password.")
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signed the brokers' certificates (TLS)."
    )

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> BusSettings:
        sasl = self.security_protocol in (KafkaSecurity.SASL_PLAINTEXT, KafkaSecurity.SASL_SSL)
        if sasl and not (self.sasl_username and self.sasl_password.get_secret_value()):
            raise ValueError(
                f"{self.security_protocol.value} needs sasl_username and sasl_password"
            )
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError("min_insync_replicas cannot exceed replication_factor")
        return self


class TaskSettings(_Block):
    """Celery task queue: eager (in process) by default, Redis in production."""

    eager: bool = Field(default=True, description="Run tasks in the calling process.")
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker URL.")
    result_backend: str = Field(
        default="redis://127.0.0.1:6379/1", description="Celery result backend URL."
    )
    task_time_limit_s: int = Field(default=600, ge=1, description="Hard time limit of a task.")


class ModelServerSettings(_Block):
    """Where a stage's networks run: in this process from the model repository, or on Triton."""

    backend: InferenceBackend = Field(
        default=InferenceBackend.LOCAL, description="local or triton."
    )
    url: str = Field(default="127.0.0.1:8001", description="Triton host:port.")
    protocol: TritonProtocol = Field(default=TritonProtocol.GRPC, description="grpc or http.")
    model_repository: str = Field(
        default="out/models", description="Model repository folder (with stainless.json)."
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Inference request timeout.")


class InferenceSettings(ModelServerSettings):
    """Inference port: PyTorch/ONNX in process by default, Triton in production."""

    model_name: str = Field(
        default="stain_confidence", description="Served model called once per micro-batch."
    )
    stained_prefix: str = Field(
        default="stained",
        pattern=r"^[a-z0-9-]+$",
        description="Object-store prefix of stained crops and heat maps.",
    )
    manifest_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._\-=+/]+/stainless\.json$",
        description=(
            "Object key of the served repository's stainless.json where Triton reads its "
            "repository from the object store (e.g. models/stainless.json): the inference "
            "service then reads the manifest there, at start and at every refresh."
        ),
    )
    max_batch: int = Field(default=16, ge=1, description="Most cells in one inference request.")
    max_events: int = Field(
        default=16, ge=1, description="Most cells.cropped events gathered into one round."
    )
    max_wait_s: float = Field(
        default=0.2, ge=0, description="Longest wait for more events once one has arrived."
    )
    review_threshold: float | None = Field(
        default=None,
        ge=0,
        description="Cells with δ below it need review; none = the exported model's calibration.",
    )
    review_below_probability: float | None = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Cells whose top class probability is below it need review (a model with "
        "calibrated probabilities only: raw ones say too little); none = no such rule.",
    )
    retry_backoff_s: float = Field(
        default=1.0, gt=0, description="First wait when the inference server is unavailable."
    )
    refresh_interval_s: float = Field(
        default=5.0, ge=0, description="How often the repository is checked for a new version."
    )
    retry_max_backoff_s: float = Field(
        default=30.0, gt=0, description="Longest wait between tries while it stays unavailable."
    )
    http_port: int = Field(
        default=8082, ge=1, le=65535, description="Health and metrics port of the consumer."
    )


class ProportionRuleSettings(_Block):
    """An abnormal proportion: a class's percentage of the leukocytes outside its limits."""

    code: str = Field(description="Clinical class code (NE also covers SNE).")
    low: float | None = Field(default=None, ge=0, le=100, description="Lowest normal percent.")
    high: float | None = Field(default=None, ge=0, le=100, description="Highest normal percent.")

    @model_validator(mode="after")
    def _valid(self) -> ProportionRuleSettings:
        self.rule()  # a known class, and at least one limit, the low one below the high one
        return self

    def rule(self) -> ProportionRule:
        return ProportionRule(self.code, self.low, self.high)


def _adult_proportions() -> tuple[ProportionRuleSettings, ...]:
    # Common adult textbook intervals, not a laboratory's own: each site sets its own
    # (children's intervals differ widely).
    limits = {"NE": (40, 75), "LY": (20, 45), "MO": (None, 10), "EO": (None, 6), "BA": (None, 2)}
    return tuple(
        ProportionRuleSettings(code=code, low=low, high=high)
        for code, (low, high) in limits.items()
    )


class ClinicalSettings(_Block):
    """The laboratory's clinical rules, shared by inference (review) and results (flags)."""

    pathological_classes: tuple[str, ...] = Field(
        default=PATHOLOGICAL,
        description="Classes that always go to expert review and are flagged when present.",
    )
    proportion_rules: tuple[ProportionRuleSettings, ...] = Field(
        default_factory=_adult_proportions,
        description="Abnormal proportions of the normal classes to flag (percent of the "
        "leukocytes); the default is common adult intervals, not this laboratory's.",
    )
    differential_count: int = Field(
        default=100,
        ge=50,
        le=1000,
        description="Leukocytes of a differential (100 or 200 in routine use, ICSH): "
        "proportions are flagged only once this many were differentiated.",
    )

    def rules(self) -> ClinicalRules:
        """The rules as the domain's :class:`ClinicalRules`."""
        return ClinicalRules(
            pathological=self.pathological_classes,
            proportions=tuple(rule.rule() for rule in self.proportion_rules),
            count=self.differential_count,
        )


class RaySettings(_Block):
    """Ray for training: a local Ray by default, a cluster when an address is given."""

    address: str | None = Field(default=None, description="Ray cluster address; none = local.")
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local Ray.")
    storage: str = Field(
        default="out/ray",
        description="Checkpoints of runs: a local folder, or with an S3 store a bucket prefix.",
    )
    use_gpu: bool = Field(default=False, description="One GPU per training worker (NCCL, AMP).")
    rayjob_template: Path | None = Field(
        default=None,
        description="KubeRay RayJob manifest with placeholders: with it the trainer submits "
        "each job as a RayJob through the Kubernetes API instead of running it on `address`.",
    )
    http_port: int = Field(
        default=8084, ge=1, le=65535, description="Health and metrics port of the trainer."
    )


class EvaluationSettings(_Block):
    """Pretrained backbones of the image-quality metrics. Nothing is downloaded: without
    them LPIPS and FID run on a random (seeded) backbone and every figure says so."""

    lpips_backbone: str | None = Field(
        default=None,
        description="torchvision state dict of LPIPS' AlexNet (ImageNet): a local path, or "
        "`store:<key>` for an object in the object store.",
    )
    fid_weights: str | None = Field(
        default=None,
        description="torchvision state dict of the FID network (`fid_net`): a local path or "
        "`store:<key>`.",
    )
    fid_net: Literal["alexnet", "inception_v3"] = Field(
        default="alexnet", description="Feature network of FID."
    )
    acceptable_ssim: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="A stained cell is acceptable when its SSIM against the registered "
        "brightfield reaches this (the calibration's definition).",
    )
    review_sensitivity: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of the unacceptable held-out cells the review threshold must "
        "send to review.",
    )


class RelaySettings(_Block):
    """Outbox relay service."""

    batch_size: int = Field(default=100, ge=1, description="Outbox rows published per round.")
    poll_interval_s: float = Field(default=0.5, gt=0, description="Wait when the outbox is empty.")
    http_port: int = Field(default=8090, ge=1, le=65535, description="Health and metrics port.")


class NotifySettings(_Block):
    """Report notifications: a FHIR-style rest-hook the notifier posts each report to."""

    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Where the notifier POSTs each report (application/fhir+json) when it is "
        "ready, signed or cancelled; unset: the notifier does not start.",
    )
    authorization: SecretStr | None = Field(
        default=None, description="Sent as the Authorization header of each notification."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Timeout of one POST.")
    http_port: int = Field(default=8094, ge=1, le=65535, description="Health and metrics port.")


class WorkerSettings(_Block):
    """Celery worker service."""

    concurrency: int = Field(default=1, ge=1, description="Worker processes.")
    metrics_port: int = Field(default=8091, ge=1, le=65535, description="Metrics port.")


class IngestionSettings(_Block):
    """Scanner upload API."""

    http_port: int = Field(default=8080, ge=1, le=65535, description="HTTP port of the API.")
    metrics_port: int = Field(
        default=8092, ge=1, le=65535, description="Port of /metrics (not the clients' port)."
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Largest accepted upload (HTTP 413 above)."
    )
    max_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="Largest accepted image (width x height), checked "
        "from the header before decoding.",
    )
    raw_prefix: str = Field(
        default="raw", pattern=r"^[a-z0-9-]+$", description="Object-store prefix of uploads."
    )
    max_decode_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=16 * 1024 * 1024,
        description="Most memory the decoding of one upload may take (in its own capped "
        "process; a few times the header's image size below that).",
    )
    decode_workers: int = Field(
        default=2, ge=1, le=16, description="Processes decoding uploads in parallel."
    )
    keep_original: bool = Field(
        default=False,
        description="Also store the upload as sent (extra pages and metadata included) beside "
        "the canonical re-encoded image.",
    )


class OpticsSettings(_Block):
    """The scanner's microscope: known settings, not estimated (stain, light and camera are)."""

    pixel_um: float = Field(
        default=0.075, gt=0.02, le=0.5, description="Pixel size in the specimen (µm)."
    )
    shear_angle_deg: float = Field(
        default=45.0,
        ge=-360.0,
        le=360.0,
        description="DIC shear direction in the image (x right, y down); the prism's sign is "
        "found from each field.",
    )
    shear_um: float = Field(default=0.15, gt=0, le=1.0, description="DIC shear distance (µm).")
    bias_rad: float = Field(
        default=0.9, gt=0, lt=3.14159, description="DIC bias retardation (radians)."
    )
    wavelength_um: float = Field(
        default=0.55, gt=0.3, lt=1.0, description="Illumination wavelength (µm)."
    )


class DetectorKind(StrEnum):
    CLASSICAL = "classical"  # image analysis, parameters from the field and the optics
    LEARNED = "learned"  # the trained network of the model repository


class DetectorSettings(ModelServerSettings):
    """Which white-cell detector each modality uses, and where a learned one runs."""

    brightfield: DetectorKind = Field(
        default=DetectorKind.CLASSICAL, description="Brightfield detector: classical or learned."
    )
    dic: DetectorKind = Field(
        default=DetectorKind.CLASSICAL,
        description="DIC detector (DIC-only slides): classical or learned.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest centre score of a learned detection; none = the exported model's.",
    )


class RegistrationSettings(_Block):
    """Registration and cropping service."""

    optics: OpticsSettings = OpticsSettings()
    detector: DetectorSettings = DetectorSettings()

    min_ecc: float = Field(
        default=0.7, gt=0, le=1, description="Fields whose final ECC is lower are rejected."
    )
    crop_sizes: tuple[int, int] = Field(
        default=(256, 360), description="Crop sizes: training and clinical review."
    )
    crops_prefix: str = Field(
        default="cells", pattern=r"^[a-z0-9-]+$", description="Object-store prefix of crops."
    )
    http_port: int = Field(
        default=8081, ge=1, le=65535, description="Health and metrics port of the consumer."
    )


class ResultsSettings(_Block):
    """Results API and review page."""

    http_port: int = Field(default=8083, ge=1, le=65535, description="HTTP port of the API.")
    metrics_port: int = Field(
        default=8093, ge=1, le=65535, description="Port of /metrics (not the clients' port)."
    )
    anonymous_role: str | None = Field(
        default=None,
        pattern=r"^(reviewer|scientist|admin)$",
        description="Role of requests without a key (embedded demo only); none = refuse them.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer of the hospital's identity provider (https): the "
        "review page offers its sign-in; none = API keys only.",
    )
    oidc_client_id: str | None = Field(
        default=None,
        description="Client id of the review page at the provider (a public client: "
        "authorization code with PKCE).",
    )
    oidc_audience: str | None = Field(
        default=None, description="The aud an ID token must name; none = the client id."
    )
    oidc_roles_claim: str = Field(
        default="roles",
        min_length=1,
        description="Claim with the user's roles; dots reach into objects "
        "(realm_access.roles on Keycloak).",
    )
    oidc_role_prefix: str = Field(
        default="stainless-",
        description="Prefix of the provider's roles that are Stainless roles "
        "(stainless-reviewer = reviewer).",
    )
    oidc_name_claim: str = Field(
        default="preferred_username",
        min_length=1,
        description="Claim naming the user in reviews and the audit trail (else sub).",
    )
    oidc_scopes: str = Field(
        default="openid profile email",
        description="Scopes the review page asks for, openid among them.",
    )

    @model_validator(mode="after")
    def _oidc_is_complete(self) -> ResultsSettings:
        if self.oidc_issuer is None:
            return self
        if not self.oidc_client_id:
            raise ValueError("oidc_client_id is required with oidc_issuer")
        _check_issuer(self.oidc_issuer)
        if "openid" not in self.oidc_scopes.split():
            raise ValueError(f"oidc_scopes must include openid, not {self.oidc_scopes!r}")
        return self


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _check_issuer(issuer: str) -> None:
    """An issuer is an https URL without query or fragment (http on loopback, for tests)."""
    url = urlsplit(issuer)
    if url.query or url.fragment or not url.hostname:
        raise ValueError(f"oidc_issuer must be a URL without query or fragment, not {issuer!r}")
    if url.scheme != "https" and not (url.scheme == "http" and url.hostname in _LOOPBACK):
        raise ValueError(f"oidc_issuer must be an https URL, not {issuer!r}")


class LogSettings(_Block):
    level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$", description="Log level."
    )
    format: LogFormat = Field(default=LogFormat.JSON, description="json or console.")


class ProcessSettings(BaseSettings):
    """What every process reads from the environment; a service's class adds its blocks."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    log: LogSettings = LogSettings()


class Settings(ProcessSettings):
    """Every block: the command line, the embedded demo and the benchmarks."""

    database: DatabaseSettings = DatabaseSettings()
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    tasks: TaskSettings = TaskSettings()
    inference: InferenceSettings = InferenceSettings()
    clinical: ClinicalSettings = ClinicalSettings()
    ray: RaySettings = RaySettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    ingestion: IngestionSettings = IngestionSettings()
    registration: RegistrationSettings = RegistrationSettings()
    relay: RelaySettings = RelaySettings()
    notify: NotifySettings = NotifySettings()
    worker: WorkerSettings = WorkerSettings()
    results: ResultsSettings = ResultsSettings()


P = TypeVar("P", bound=ProcessSettings)


def part(settings: ProcessSettings, cls: type[P]) -> P:
    """The blocks of ``settings`` that the process class ``cls`` reads (already validated)."""
    blocks = {name: getattr(settings, name) for name in cls.model_fields}
    return cls.model_validate(blocks)


def iter_setting_fields(
    model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX
) -> Iterator[tuple[str, Any, str]]:
    """Yield ``(environment variable, default, description)`` for every leaf setting."""
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_setting_fields(annotation, env + ENV_NESTED_DELIMITER)
        else:
            default = info.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                default = "(secret)"
            elif isinstance(default, tuple) and any(isinstance(v, BaseModel) for v in default):
                assert annotation is not None
                default = json.dumps(TypeAdapter(annotation).dump_python(default, mode="json"))
            yield env, default, info.description or ""


def _known_variables() -> set[str]:
    return {env for env, _, _ in iter_setting_fields()}


@overload
def load_settings() -> Settings: ...


@overload
def load_settings(cls: type[P]) -> P: ...


def load_settings(cls: type[ProcessSettings] = Settings) -> ProcessSettings:
    """Build the process's settings (every block by default) from the environment.

    Raises:
        SettingsError: a ``STAINLESS_*`` variable is unknown to every process, or one that
            ``cls`` reads is malformed.
    """
    known = _known_variables()
    unknown = sorted(
        key for key in os.environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    )
    if unknown:
        raise SettingsError(
            "unknown setting(s): " + ", ".join(unknown) + " (see docs/reference/settings.md)"
        )
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        variable = ENV_PREFIX + ENV_NESTED_DELIMITER.join(part.upper() for part in loc)
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{variable}: {error['msg']}{shown}")
    return "invalid setting(s): " + "; ".join(lines)
