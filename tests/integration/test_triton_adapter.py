"""The Triton adapter against the real Triton server serving the exported repository.

Over gRPC and HTTP it computes what the in-process adapter computes on the same files;
a wrong request is rejected, a server that is down, silent or absent is unavailable,
and the same client works again once the server is back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stainless.core.config import InferenceBackend, InferenceSettings, TritonProtocol
from stainless.core.inference.factory import create_inference
from stainless.core.inference.local import LocalInference
from stainless.core.inference.manifest import read_manifest
from stainless.core.inference.port import CellOutput, InferenceRejected, InferenceUnavailable
from stainless.core.inference.triton import ServedModelMismatch, TritonInference

pytestmark = pytest.mark.integration

PROTOCOLS = [TritonProtocol.GRPC, TritonProtocol.HTTP]
TOL = 1e-4


def _url(server, protocol: TritonProtocol) -> str:  # type: ignore[no-untyped-def]
    return str(server.grpc_url if protocol is TritonProtocol.GRPC else server.http_url)


def _batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


def _assert_same(got: list[CellOutput], want: list[CellOutput]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.stained.shape == b.stained.shape
        assert np.abs(a.stained - b.stained).max() < TOL
        assert np.abs(a.heatmap - b.heatmap).max() < TOL
        assert abs(a.delta - b.delta) < TOL
        assert abs(a.gamma - b.gamma) < TOL
        assert a.probabilities.keys() == b.probabilities.keys()
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < TOL
        assert a.predicted_class == b.predicted_class


@pytest.fixture(scope="module")
def local(exported_python_repo: Path) -> LocalInference:
    return LocalInference(exported_python_repo)


@pytest.fixture(params=PROTOCOLS, ids=str)
def client(
    request: pytest.FixtureRequest, triton_server, exported_python_repo: Path
) -> Iterator[TritonInference]:  # type: ignore[no-untyped-def]
    protocol: TritonProtocol = request.param
    adapter = TritonInference(
        _url(triton_server, protocol),
        manifest=read_manifest(exported_python_repo),
        protocol=protocol,
        timeout_s=10,
    )
    yield adapter
    adapter.close()


def test_same_outputs_as_the_local_adapter(client: TritonInference, local: LocalInference) -> None:
    assert client.ready()
    batch = _batch(7, client.manifest.image_size)
    _assert_same(client.infer(batch), local.infer(batch))
    # The noise is seeded per request: the same batch gives the same δ again.
    _assert_same(client.infer(batch), local.infer(batch))
    _assert_same(client.infer(batch[:1]), local.infer(batch[:1]))


def test_works_from_several_threads(client: TritonInference, local: LocalInference) -> None:
    batches = [_batch(2, client.manifest.image_size, seed) for seed in range(4)]
    results: dict[int, list[CellOutput]] = {}

    def run(i: int) -> None:
        results[i] = client.infer(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == list(range(len(batches)))
    for i, batch in enumerate(batches):
        _assert_same(results[i], local.infer(batch))


def test_a_batch_of_the_wrong_side_is_rejected(client: TritonInference) -> None:
    size = client.manifest.image_size
    with pytest.raises(InferenceRejected, match="must be"):  # refused before sending
        client.infer(_batch(2, size // 2))


def test_stain_is_served_as_onnx_and_matches_eager_pytorch(
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
) -> None:
    import torch
    import tritonclient.grpc as grpcclient

    from stainless.ml.models.configs import MultiTaskConfig
    from stainless.ml.models.mtmd import Domain, build_multitask

    assert (exported_python_repo / "stain" / "1" / "model.onnx").is_file()
    config = MultiTaskConfig.tiny()
    with torch.random.fork_rng(devices=[]):  # the model exported_python_repo holds
        torch.manual_seed(0)
        translator = build_multitask(config).eval()
    dic = _batch(3, config.image_size, seed=5)[:, None] * 2 - 1
    with torch.no_grad():
        want = translator.translate(torch.from_numpy(dic).repeat(1, 3, 1, 1), Domain.BF).numpy()
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        request = grpcclient.InferInput("INPUT__0", list(dic.shape), "FP32")
        request.set_data_from_numpy(dic)
        got = client.infer("stain", [request]).as_numpy("OUTPUT__0")
    finally:
        client.close()
    assert got is not None and got.shape == want.shape == (3, 3, 64, 64)
    assert np.abs(got - want).max() < TOL


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_the_server_rejects_a_shape_it_does_not_serve(
    protocol: TritonProtocol,
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
) -> None:
    manifest = read_manifest(exported_python_repo)
    # A manifest that disagrees with the server: the request reaches it and gets a 400.
    wrong = manifest.model_copy(update={"image_size": manifest.image_size // 2})
    adapter = TritonInference(
        _url(triton_server, protocol), manifest=wrong, protocol=protocol, timeout_s=10
    )
    try:
        with pytest.raises(InferenceRejected, match="rejected the request"):
            adapter.infer(_batch(2, wrong.image_size))
    finally:
        adapter.close()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_the_served_config_is_checked_against_the_manifest(
    protocol: TritonProtocol,
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
) -> None:
    manifest = read_manifest(exported_python_repo)
    url = _url(triton_server, protocol)
    right = TritonInference(url, manifest=manifest, protocol=protocol, timeout_s=10)
    wrong = manifest.model_copy(
        update={"image_size": manifest.image_size * 2, "classes": manifest.classes[:3]}
    )
    other = TritonInference(url, manifest=wrong, protocol=protocol, timeout_s=10)
    try:
        right.verify(max_batch=32)
        with pytest.raises(ServedModelMismatch, match="max_batch_size 32 is below") as found:
            right.verify(max_batch=33)
        with pytest.raises(ServedModelMismatch) as found:
            other.verify(max_batch=16)
        message = str(found.value)
        assert (
            "input INPUT__0 is TYPE_FP32 [1, 64, 64], expected TYPE_FP32 [1, 128, 128]" in message
        )
        assert "output OUTPUT__4 has dims [7], expected [3]" in message
    finally:
        right.close()
        other.close()


def test_a_service_does_not_start_against_a_server_serving_another_model(
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
) -> None:
    settings = InferenceSettings(
        backend=InferenceBackend.TRITON,
        url=triton_server.grpc_url,
        model_repository=str(exported_python_repo),
        max_batch=64,  # more than the served max_batch_size
    )
    with pytest.raises(ServedModelMismatch, match="STAINLESS_INFERENCE__MAX_BATCH"):
        create_inference(settings)
    # A server that does not answer yet is checked when it first does: the service starts
    # and waits; a mismatch found then keeps it not ready, its requests unavailable.
    down = settings.model_copy(update={"url": f"127.0.0.1:{_closed_port()}", "timeout_s": 1.0})
    adapter = create_inference(down)
    try:
        assert not adapter.ready()
    finally:
        adapter.close()
    triton_server.stop()
    try:
        late = create_inference(settings.model_copy(update={"timeout_s": 2.0}))
        fits = create_inference(settings.model_copy(update={"max_batch": 8, "timeout_s": 2.0}))
    finally:
        triton_server.start()
    try:
        deadline = time.monotonic() + 10  # gRPC reconnects within its 2 s backoff
        while not fits.ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fits.ready() and not late.ready()
        with pytest.raises(InferenceUnavailable, match="STAINLESS_INFERENCE__MAX_BATCH"):
            late.infer(_batch(1, late.manifest.image_size))
    finally:
        late.close()
        fits.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_a_model_the_server_does_not_serve_is_unavailable(
    protocol: TritonProtocol,
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
) -> None:
    adapter = TritonInference(
        _url(triton_server, protocol),
        manifest=read_manifest(exported_python_repo),
        protocol=protocol,
        model_name="no_such_model",
        timeout_s=10,
    )
    try:
        assert not adapter.ready()
        with pytest.raises(InferenceUnavailable, match="no_such_model"):
            adapter.infer(_batch(1, adapter.manifest.image_size))
    finally:
        adapter.close()


@pytest.mark.slow
def test_server_down_then_back(
    triton_server, exported_python_repo: Path, local: LocalInference
) -> None:  # type: ignore[no-untyped-def]
    manifest = read_manifest(exported_python_repo)
    clients = [
        TritonInference(_url(triton_server, p), manifest=manifest, protocol=p, timeout_s=3)
        for p in PROTOCOLS
    ]
    batch = _batch(2, manifest.image_size)
    try:
        for adapter in clients:  # connections are open before the server goes away
            _assert_same(adapter.infer(batch), local.infer(batch))
        triton_server.stop()
        for protocol, adapter in zip(PROTOCOLS, clients, strict=True):
            assert adapter.ready() is False
            began = time.monotonic()
            with pytest.raises(InferenceUnavailable, match=_url(triton_server, protocol)):
                adapter.infer(batch)
            assert time.monotonic() - began < 3 + 1
    finally:
        if not triton_server.running:
            triton_server.start()
    try:
        for adapter in clients:
            deadline = time.monotonic() + 10  # gRPC reconnects within its 2 s backoff
            while not adapter.ready() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert adapter.ready()
            _assert_same(_answer_after_restart(adapter, batch), local.infer(batch))
    finally:
        for adapter in clients:
            adapter.close()


def _answer_after_restart(adapter: TritonInference, batch: np.ndarray) -> list[CellOutput]:
    """The first answer of a restarted server: on a loaded machine its first request may
    outlast the adapter's 3 s timeout while the model warms up, so it may take a few tries."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return adapter.infer(batch)
        except InferenceUnavailable:
            if time.monotonic() > deadline:
                raise


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_a_silent_server_times_out(
    protocol: TritonProtocol, silent_port: int, exported_python_repo: Path
) -> None:
    adapter = TritonInference(
        f"127.0.0.1:{silent_port}",
        manifest=read_manifest(exported_python_repo),
        protocol=protocol,
        timeout_s=1,
    )
    try:
        began = time.monotonic()
        assert adapter.ready() is False
        with pytest.raises(InferenceUnavailable, match=f"127.0.0.1:{silent_port}"):
            adapter.infer(_batch(1, adapter.manifest.image_size))
        assert time.monotonic() - began < 2 * 1 + 2
    finally:
        adapter.close()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_nothing_listening_is_unavailable(
    protocol: TritonProtocol, unused_port: int, exported_python_repo: Path
) -> None:
    adapter = TritonInference(
        f"127.0.0.1:{unused_port}",
        manifest=read_manifest(exported_python_repo),
        protocol=protocol,
        timeout_s=2,
    )
    try:
        assert adapter.ready() is False
        began = time.monotonic()
        with pytest.raises(InferenceUnavailable, match=f"127.0.0.1:{unused_port}"):
            adapter.infer(_batch(1, adapter.manifest.image_size))
        assert time.monotonic() - began < 2 + 1
    finally:
        adapter.close()


def test_a_closed_client_is_unavailable(client: TritonInference) -> None:
    client.close()
    assert client.ready() is False
    with pytest.raises(InferenceUnavailable, match="closed"):
        client.infer(_batch(1, client.manifest.image_size))


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_the_factory_builds_it_from_settings(
    protocol: TritonProtocol,
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
    local: LocalInference,
) -> None:
    settings = InferenceSettings(
        backend=InferenceBackend.TRITON,
        url=_url(triton_server, protocol),
        protocol=protocol,
        model_repository=str(exported_python_repo),
        timeout_s=10,
    )
    adapter = create_inference(settings)
    try:
        assert isinstance(adapter, TritonInference)
        batch = _batch(3, adapter.manifest.image_size, seed=7)
        _assert_same(adapter.infer(batch), local.infer(batch))
    finally:
        adapter.close()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
def test_a_served_learned_detector_finds_what_the_local_one_finds(
    protocol: TritonProtocol,
    triton_server,  # type: ignore[no-untyped-def]
    exported_python_repo: Path,
) -> None:
    from stainless.core.config import DetectorSettings
    from stainless.stages.registration.detectors import learned_detector

    image = np.random.default_rng(3).integers(120, 230, (200, 260, 3), dtype=np.uint8)
    local = learned_detector(
        DetectorSettings(model_repository=str(exported_python_repo)), "bf", pixel_um=0.15
    )
    served = learned_detector(
        DetectorSettings(
            model_repository=str(exported_python_repo),
            backend=InferenceBackend.TRITON,
            url=_url(triton_server, protocol),
            protocol=protocol,
            timeout_s=10,
        ),
        "bf",
        pixel_um=0.15,
    )
    want = local.detect(image)
    got = served.detect(image)
    assert want  # threshold 0: the tiny random network reports its best peaks
    assert [d.box for d in got] == [d.box for d in want]
