"""Triton adapter: one KServe v2 request per micro-batch, over gRPC (default) or HTTP.

Inference uses the calls every v2 server implements (server live, model ready and
infer); configuration, statistics and repository control are Triton's own extensions.
The tests run it against the real Triton server. Over HTTP the tensors travel in
Triton's binary tensor extension (``binary_data=True``), not as JSON numbers.

Errors are mapped onto the port: a server that is down, slow, not ready or without the
model raises :class:`InferenceUnavailable` (retry later); a request the server refuses
(gRPC ``INVALID_ARGUMENT``, HTTP 400) raises :class:`InferenceRejected`.

Before serving, :meth:`TritonInference.verify` reads the model's configuration from the
server (Triton's model-configuration extension) and compares it with the repository's
manifest and the stage's micro-batch: a server serving another model shape is refused
with every difference named (:class:`ServedModelMismatch`), not discovered cell by cell.
A server that does not answer yet is checked when it first does (:meth:`verify_later`):
until the mismatch is fixed the adapter is not ready and every request is unavailable,
so the stage waits and loses nothing. A promoted version is checked the same way before
the adapter switches to it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from stainless.core.config import TritonProtocol
from stainless.core.inference.port import (
    F32,
    INPUT_NAME,
    OUTPUT_NAMES,
    CellOutput,
    InferenceRejected,
    InferenceUnavailable,
    pack_input,
    unpack_outputs,
)
from stainless.domain.served import ServedManifest

log = structlog.get_logger(__name__)

# Statuses that say the request is wrong (retrying it will not help).
_REJECTED_GRPC = frozenset(
    {
        "StatusCode.INVALID_ARGUMENT",
        "StatusCode.OUT_OF_RANGE",
        "StatusCode.FAILED_PRECONDITION",
        "StatusCode.UNIMPLEMENTED",
    }
)
_REJECTED_HTTP = frozenset({"400", "413", "422"})
# gRPC waits up to 120 s between reconnection attempts by default: a restarted server
# would be ignored that long. Cap the wait at 2 s; the consumer's own backoff does the rest.
_MAX_RECONNECT_BACKOFF_MS = 2000


def _channel_args(max_message: int) -> list[tuple[str, int]]:
    """tritonclient's default channel options with a short reconnection backoff."""
    return [
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
    ]


class TritonClient:
    """One KServe v2 server: requests to any of its models, errors mapped onto the port.

    Args:
        url: ``host:port`` of the server, without a scheme (gRPC 8001, HTTP 8000 on Triton).
        protocol: gRPC or HTTP.
        timeout_s: connection and request timeout, seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        protocol: TritonProtocol = TritonProtocol.GRPC,
        timeout_s: float = 30.0,
    ) -> None:
        if "://" in url:
            raise ValueError(f"the Triton url is host:port without a scheme, got {url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url = url
        self.protocol = TritonProtocol(protocol)
        self.timeout_s = timeout_s
        self._closed = False
        # The gRPC client is thread-safe; the HTTP one (gevent) is not: one per thread.
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[Any] = []
        if self.protocol is TritonProtocol.GRPC:
            import tritonclient.grpc as grpcclient

            self._grpc: Any = grpcclient.InferenceServerClient(
                url=url, channel_args=_channel_args(grpcclient.MAX_GRPC_MESSAGE_SIZE)
            )
            self._clients.append(self._grpc)

    def where(self, model: str, version: str) -> str:
        return f"model {model!r} version {version} at {self.url} ({self.protocol})"

    def _client(self, model: str, version: str) -> Any:
        if self._closed:
            raise InferenceUnavailable(f"the client of {self.where(model, version)} is closed")
        if self.protocol is TritonProtocol.GRPC:
            return self._grpc
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(
                url=self.url,
                connection_timeout=self.timeout_s,
                network_timeout=self.timeout_s,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def infer(
        self, model: str, version: str, x: F32, outputs: Sequence[str]
    ) -> list[npt.NDArray[np.generic]]:
        """One request with ``x`` as ``INPUT__0``; the named outputs, in that order.

        Raises:
            InferenceUnavailable: the server cannot answer now.
            InferenceRejected: the server refuses the request, or an output is missing.
        """
        client = self._client(model, version)
        try:
            if self.protocol is TritonProtocol.GRPC:
                result = self._infer_grpc(client, model, version, x, outputs)
            else:
                result = self._infer_http(client, model, version, x, outputs)
        except Exception as exc:  # every client failure is mapped onto the port
            raise self._map_error(exc, model, version) from exc
        except BaseException as exc:  # gevent's Timeout is a BaseException
            if _is_timeout(exc):
                raise self._map_error(exc, model, version) from exc
            raise
        arrays = []
        for name in outputs:
            value = result.as_numpy(name)
            if value is None:
                raise InferenceRejected(f"{self.where(model, version)} did not return {name}")
            arrays.append(np.asarray(value))
        return arrays

    def _infer_grpc(
        self, client: Any, model: str, version: str, x: F32, outputs: Sequence[str]
    ) -> Any:
        import tritonclient.grpc as grpcclient

        tensor = grpcclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(
            model,
            [tensor],
            model_version=version,
            outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
            client_timeout=self.timeout_s,
        )

    def _infer_http(
        self, client: Any, model: str, version: str, x: F32, outputs: Sequence[str]
    ) -> Any:
        import tritonclient.http as httpclient

        tensor = httpclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        return client.infer(
            model,
            [tensor],
            model_version=version,
            outputs=[httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs],
        )

    def ready(self, model: str, version: str) -> bool:
        """Whether the server is live and serves the model now; False when it cannot be reached."""
        try:
            client = self._client(model, version)
            if self.protocol is TritonProtocol.GRPC:
                live = client.is_server_live(client_timeout=self.timeout_s)
                return bool(
                    live and client.is_model_ready(model, version, client_timeout=self.timeout_s)
                )
            return bool(client.is_server_live() and client.is_model_ready(model, version))
        except Exception:  # noqa: BLE001 - not reachable is "not ready"
            return False
        except BaseException as exc:  # gevent's Timeout is a BaseException
            if _is_timeout(exc):
                return False
            raise

    def model_config(self, model: str, version: str) -> dict[str, Any]:
        """The model's configuration as the server reads it (Triton's JSON form).

        Raises:
            InferenceUnavailable: the server cannot answer now.
        """
        client = self._client(model, version)
        try:
            if self.protocol is TritonProtocol.GRPC:
                answer = client.get_model_config(
                    model, version, as_json=True, client_timeout=self.timeout_s
                )
                return dict(answer["config"])
            return dict(client.get_model_config(model, version))
        except Exception as exc:  # every client failure is mapped onto the port
            raise self._map_error(exc, model, version) from exc

    def statistics(self, model: str, version: str = "") -> dict[str, Any]:
        """Triton's statistics of ``model`` (every version when ``version`` is empty), in
        its JSON form (see :mod:`stainless.core.inference.statistics`).

        Raises:
            InferenceUnavailable: the server cannot answer now.
        """
        client = self._client(model, version)
        try:
            if self.protocol is TritonProtocol.GRPC:
                return dict(
                    client.get_inference_statistics(
                        model, version, as_json=True, client_timeout=self.timeout_s
                    )
                )
            return dict(client.get_inference_statistics(model, version))
        except Exception as exc:  # every client failure is mapped onto the port
            raise self._map_error(exc, model, version) from exc

    def load(self, model: str, version: str) -> None:
        """Ask the server to load ``model`` (explicit model control); return once ``version``
        is ready.

        A server without the model-repository extension (or in poll mode) refuses the
        load; it is then expected to have picked the version up itself.

        Raises:
            InferenceUnavailable: the server does not report that version ready.
        """
        client = self._client(model, version)
        with contextlib.suppress(Exception):  # not every v2 server offers explicit control
            client.load_model(model)
        try:
            ready = bool(client.is_model_ready(model, version))
        except Exception as exc:
            raise self._map_error(exc, model, version) from exc
        if not ready:
            raise InferenceUnavailable(f"{self.url} does not serve {model} version {version} yet")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()

    def _map_error(self, exc: BaseException, model: str, version: str) -> Exception:
        """The port's exception for a client failure."""
        status = _status(exc)
        detail = _message(exc)
        where = self.where(model, version)
        if status in _REJECTED_GRPC or status in _REJECTED_HTTP:
            return InferenceRejected(f"{where} rejected the request: {detail}")
        if status in {"StatusCode.DEADLINE_EXCEEDED", "408", "504"} or _is_timeout(exc):
            reason = f"did not answer within {self.timeout_s:g} s"
        elif status in {"StatusCode.NOT_FOUND", "404"}:
            reason = "does not serve the model (not loaded or not ready)"
        elif status in {"StatusCode.UNAVAILABLE", "503"} or isinstance(exc, OSError):
            reason = "cannot be reached or is not ready"
        else:
            reason = "failed"
        return InferenceUnavailable(f"{where}: the server {reason}: {detail}")


class ServedModelMismatch(ValueError):
    """The server serves the model with another configuration than the manifest says."""


def _dims(tensor: Mapping[str, Any]) -> list[int]:
    return [int(d) for d in tensor.get("dims", [])]


def config_problems(
    config: Mapping[str, Any], manifest: ServedManifest, *, max_batch: int
) -> list[str]:
    """How a served model's configuration (Triton's JSON form) differs from what the
    inference stage sends and reads: the input, the five outputs and the batch size."""
    size, classes = manifest.image_size, len(manifest.classes)
    problems = []
    inputs = list(config.get("input", []))
    if [i.get("name") for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs {[i.get('name') for i in inputs]}, expected [{INPUT_NAME!r}]")
    elif _dims(inputs[0]) != [1, size, size] or inputs[0].get("data_type") != "TYPE_FP32":
        problems.append(
            f"input {INPUT_NAME} is {inputs[0].get('data_type')} {_dims(inputs[0])}, "
            f"expected TYPE_FP32 [1, {size}, {size}] (the manifest's image size)"
        )
    outputs = {o.get("name"): _dims(o) for o in config.get("output", [])}
    expected = dict(
        zip(OUTPUT_NAMES, ([3, size, size], [1], [1], [size, size], [classes]), strict=True)
    )
    if set(outputs) != set(expected):
        problems.append(f"outputs {sorted(outputs)}, expected {sorted(expected)}")
    else:
        problems += [
            f"output {name} has dims {outputs[name]}, expected {dims}"
            for name, dims in expected.items()
            if outputs[name] != dims
        ]
    served_batch = int(config.get("max_batch_size", 0))
    if served_batch < max_batch:
        problems.append(
            f"max_batch_size {served_batch} is below the stage's micro-batch of {max_batch} "
            "(STAINLESS_INFERENCE__MAX_BATCH)"
        )
    return problems


class TritonInference:
    """The inference port over a Triton (KServe v2) server.

    Args:
        url: ``host:port`` of the server, without a scheme (gRPC 8001, HTTP 8000 on Triton).
        manifest: the served repository's manifest (input side, classes, version).
        protocol: gRPC or HTTP.
        model_name: the served model called once per micro-batch.
        timeout_s: connection and request timeout, seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        manifest: ServedManifest,
        protocol: TritonProtocol = TritonProtocol.GRPC,
        model_name: str = "stain_confidence",
        timeout_s: float = 30.0,
    ) -> None:
        self._server = TritonClient(url, protocol=protocol, timeout_s=timeout_s)
        self._manifest = manifest
        self._model = model_name
        self._version = str(manifest.version)
        self._lock = threading.Lock()
        self._max_batch: int | None = None  # the micro-batch checked against, once known
        self._pending = False  # a check waits for the server to answer
        self._problem: str | None = None  # the mismatch found by a late check

    @property
    def manifest(self) -> ServedManifest:
        return self._manifest

    def infer(self, batch: F32, manifest: ServedManifest | None = None) -> list[CellOutput]:
        self._check_late()
        if self._problem is not None:
            raise InferenceUnavailable(self._problem)
        manifest = manifest or self._manifest
        x = pack_input(batch, manifest)
        outputs = self._server.infer(self._model, str(manifest.version), x, OUTPUT_NAMES)
        return unpack_outputs(outputs, manifest, len(batch))

    def ready(self, manifest: ServedManifest | None = None) -> bool:
        """Whether the server is live and serves the model's current version (or
        ``manifest``'s) now; False when it cannot be reached."""
        self._check_late()
        if self._problem is not None:
            return False
        version = self._version if manifest is None else str(manifest.version)
        return self._server.ready(self._model, version)

    def verify(self, max_batch: int, manifest: ServedManifest | None = None) -> None:
        """Compare the served model's configuration (of ``manifest``'s version, default the
        current one) with the manifest and ``max_batch``.

        Raises:
            ServedModelMismatch: they differ; the message names every difference.
            InferenceUnavailable: the server cannot be asked now.
        """
        self._max_batch = max_batch
        manifest = manifest or self._manifest
        version = str(manifest.version)
        config = self._server.model_config(self._model, version)
        problems = config_problems(config, manifest, max_batch=max_batch)
        if problems:
            raise ServedModelMismatch(
                f"{self._server.where(self._model, version)} does not serve what "
                f"{manifest.model_version} needs: " + "; ".join(problems)
            )

    def verify_later(self, max_batch: int) -> None:
        """:meth:`verify` once the server answers (it does not yet)."""
        self._max_batch, self._pending = max_batch, True

    def _check_late(self) -> None:
        if not self._pending or self._max_batch is None:
            return
        try:
            self.verify(self._max_batch)
        except InferenceUnavailable:
            return  # still not answering: checked at the next call
        except ServedModelMismatch as exc:
            self._problem = str(exc)
            log.error("inference.served_model_mismatch", reason=self._problem)
        self._pending = False

    def statistics(self) -> dict[str, Any]:
        """The server's statistics of the served model, every version loaded."""
        return self._server.statistics(self._model)

    def switch(self, manifest: ServedManifest) -> None:
        """Ask the server to load the new version (explicit model control), then call it.

        The switch only succeeds when the server reports that version ready.
        """
        version = str(manifest.version)
        self._server.load(self._model, version)
        if self._max_batch is not None:
            try:
                self.verify(self._max_batch, manifest)
            except ServedModelMismatch as exc:
                raise InferenceUnavailable(f"not switching: {exc}") from exc
        with self._lock:
            self._manifest, self._version = manifest, version

    def close(self) -> None:
        self._server.close()


def _status(exc: BaseException) -> str | None:
    status = getattr(exc, "status", None)
    if callable(status):
        value = status()
        return None if value is None else str(value)
    return None


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if callable(message):
        text = message()
        if text:
            return str(text).strip().splitlines()[0]
    return f"{type(exc).__name__}: {exc}".strip()


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return type(exc).__name__ == "Timeout" and type(exc).__module__.startswith("gevent")
