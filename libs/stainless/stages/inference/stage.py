"""``cells.cropped`` → stained crops, heat maps, predictions; ``slides.completed`` at the end.

One event carries the cells of one field. The consumer gathers events (at most
``max_events``, waiting at most ``max_wait_s`` for more) and the stainer loads their
cells' DIC crops, asks the inference port in micro-batches of at most ``max_batch``
cells (one round trip each), stores the stained crop and the heat map as PNG, writes one
prediction row per cell and model version, flags cells for expert review with their
reasons (δ under the calibrated threshold, a calibrated top class probability under
``review_below_probability``, a pathological class) and announces ``cells.stained`` per
slide; all rows and events commit in one transaction with the processed-event markers.
A cell that already has a prediction of this model version is skipped, so a
redelivery changes nothing.

A slide is stained by one model version. When ``stainless promote`` changes the
repository's version, the stainer switches between two rounds; slides begun before the
switch finish on the version they began with (the port keeps the previous version served,
as Triton's ``version_policy`` keeps two), slides begun after it use the new one. A slide
whose version is no longer served (a second promotion, or a restart of this process
mid-slide) is stained again whole with the current version, so it still completes on one.

When the inference server is unavailable the stainer waits with doubling backoff and
tries again, without limit, until the server answers or the process is told to stop
(then :class:`HandlerInterrupted` leaves the event unacknowledged for the next run).
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import cv2
import numpy as np
import structlog
from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from stainless.core.config import InferenceSettings
from stainless.core.db.models import (
    Cell,
    FieldImage,
    Modality,
    Prediction,
    Registration,
    Slide,
    SlideStatus,
)
from stainless.core.events import (
    CellsCropped,
    CellsStained,
    Consumer,
    ConsumerGroup,
    Envelope,
    EventBus,
    SlideCompleted,
    SlideUploaded,
    Topic,
)
from stainless.core.events.bus import Batching, HandlerInterrupted
from stainless.core.events.idempotency import IdempotentBatchHandler
from stainless.core.events.outbox import add_event
from stainless.core.inference.port import CellOutput, InferencePort, InferenceUnavailable
from stainless.core.storage import ObjectStore
from stainless.core.storage.keys import crop_size_of
from stainless.domain.review import ReviewStatus, review_reasons
from stainless.domain.served import ManifestError, ServedManifest
from stainless.imaging.codecs import decode, encode_png, probe
from stainless.imaging.inputs import dic_unit
from stainless.stages.inference.profile import Phase, StageProfile

log = structlog.get_logger(__name__)

CELLS = MetricCounter(
    "stainless_cells_stained_total", "Cells stained and scored", ["review_status"]
)
BATCH_SECONDS = Histogram(
    "stainless_inference_batch_seconds", "One inference round trip (a micro-batch)"
)
SWITCHES = MetricCounter(
    "stainless_inference_model_switches_total", "Switches to a newly promoted model version"
)
UNAVAILABLE = MetricCounter(
    "stainless_inference_unavailable_total", "Tries that found the inference server unavailable"
)
FROZEN = MetricCounter(
    "stainless_inference_signed_skipped_total", "Cells of signed slides left as signed"
)
RESTAINED = MetricCounter(
    "stainless_inference_slides_restained_total",
    "Slides stained again whole because the version they began with is no longer served",
)


class MissingCrop(LookupError):
    """A cropped-cell event names a cell or crop that does not exist."""


class VersionRetired(RuntimeError):
    """The server no longer serves the earlier version a slide began with."""


def heatmap_png(heat: np.ndarray) -> bytes:
    """The per-pixel variance as a magma-coloured PNG, scaled to the cell's own maximum."""
    peak = float(heat.max())
    scaled = np.zeros(heat.shape, np.uint8) if peak <= 0 else (heat / peak * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA)
    return encode_png(np.ascontiguousarray(bgr[..., ::-1]))


class CellStainer:
    """Stain, classify and score cells through the inference port; record the results."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        inference: InferencePort,
        settings: InferenceSettings,
        pathological_classes: Iterable[str],
        stop: threading.Event | None = None,
        repository: Callable[[], ServedManifest] | None = None,
        profile: StageProfile | None = None,
    ) -> None:
        """``repository`` reads the model repository's manifest: when it names another
        version (``stainless promote``), the port switches to it between two rounds;
        ``profile`` accumulates the seconds of each phase."""
        self._store = store
        self._inference = inference
        self._settings = settings
        self._pathological = frozenset(pathological_classes)
        self._stop = stop or threading.Event()
        self._repository = repository
        self.profile = profile or StageProfile()
        self._checked = time.monotonic()
        self._manifest = inference.manifest
        # The version switched from stays served for the slides begun with it.
        self._served = {self._manifest.model_version: self._manifest}

    def refresh(self) -> bool:
        """Switch to the repository's version if it changed; True when it did."""
        if self._repository is None:
            return False
        self._checked = time.monotonic()
        try:
            manifest = self._repository()
        except ManifestError as exc:
            log.warning("model repository unreadable, keeping the current model", error=str(exc))
            return False
        if manifest == self._inference.manifest:
            return False
        try:
            self._inference.switch(manifest)
        except InferenceUnavailable as exc:
            log.warning("new model version not loaded yet", error=str(exc))
            return False
        previous = self._manifest
        self._served = {previous.model_version: previous, manifest.model_version: manifest}
        self._manifest = manifest
        SWITCHES.inc()
        log.info(
            "model switched", previous=previous.model_version, model_version=self.model_version
        )
        return True

    @property
    def model_version(self) -> str:
        return self._manifest.model_version

    @property
    def settings(self) -> InferenceSettings:
        return self._settings

    @property
    def review_threshold(self) -> float:
        return self.threshold(self._manifest)

    def threshold(self, manifest: ServedManifest) -> float:
        """The δ review threshold of cells stained by ``manifest``'s version."""
        override = self._settings.review_threshold
        return override if override is not None else manifest.review_threshold

    def slide_versions(self, session: Session, slide_ids: Iterable[str]) -> dict[str, str]:
        """The model version each slide is stained by: the current one's where it has a
        prediction of it or none yet, else the version of its latest prediction."""
        ids = list(slide_ids)
        rows = session.exec(
            select(Cell.slide_id, Prediction.model_version, func.max(Prediction.created_at))
            .join(Prediction, col(Prediction.cell_id) == col(Cell.id))
            .where(col(Cell.slide_id).in_(ids))
            .group_by(col(Cell.slide_id), col(Prediction.model_version))
        ).all()
        current = self.model_version
        begun = {slide_id for slide_id, version, _ in rows if version == current}
        versions = dict.fromkeys(ids, current)
        for slide_id, version, _ in sorted(rows, key=lambda row: row[2]):
            if slide_id not in begun:
                versions[slide_id] = version  # the latest one wins
        return versions

    def stain(self, session: Session, slide_id: str, cell_ids: Sequence[str]) -> list[str]:
        """Predict every cell of ``cell_ids`` not yet predicted; return the new ones' ids."""
        return self.stain_many(session, [(slide_id, cell_ids)]).get(slide_id, [])

    def stain_many(
        self, session: Session, requests: Sequence[tuple[str, Sequence[str]]]
    ) -> dict[str, list[str]]:
        """:meth:`stain` for cells of several events, batched together; new ids per slide."""
        if time.monotonic() - self._checked >= self._settings.refresh_interval_s:
            self.refresh()
        cells: dict[str, Cell] = {}
        with self.profile.phase(Phase.QUERY):
            signed = _signed(session, {slide_id for slide_id, _ in requests})
            for slide_id, cell_ids in requests:
                if slide_id in signed:  # a signed slide is frozen: its report may not change
                    log.warning(
                        "cells of a signed slide skipped", slide_id=slide_id, cells=len(cell_ids)
                    )
                    FROZEN.inc(len(cell_ids))
                    continue
                cells.update((c.id, c) for c in self._cells(session, slide_id, cell_ids))
            versions = self.slide_versions(session, {c.slide_id for c in cells.values()})
        groups: dict[str, list[Cell]] = {}
        for cell in cells.values():
            groups.setdefault(versions[cell.slide_id], []).append(cell)
        stained: dict[str, list[str]] = {}
        for version, group in groups.items():
            manifest = self._served.get(version)
            if manifest is not None and (version == self.model_version or self._serves(manifest)):
                try:
                    _merge(stained, self._stain_group(session, manifest, group))
                    continue
                except VersionRetired:
                    pass  # unloaded meanwhile: the slides start again on the current version
            restained = self._restain(session, version, group)
            for slide_id in {c.slide_id for c in restained}:
                versions[slide_id] = self.model_version
            _merge(stained, self._stain_group(session, self._manifest, restained))
        for slide_id, ids in stained.items():
            payload = CellsStained(
                slide_id=slide_id, model_version=versions[slide_id], cell_ids=ids
            )
            add_event(session, Envelope.wrap(payload, key=slide_id))
        return stained

    def _serves(self, manifest: ServedManifest) -> bool:
        """Whether ``manifest``'s version can still be asked for: served, or the server
        is down altogether (then the stage waits for it as for the current version)."""
        return self._inference.ready(manifest) or not self._inference.ready()

    def _restain(self, session: Session, version: str, cells: list[Cell]) -> list[Cell]:
        """Every cell of the slides begun with ``version`` (no longer served), to stain
        again with the current version."""
        slide_ids = sorted({c.slide_id for c in cells})
        log.warning(
            "slides begun with a version no longer served, stained again whole",
            slides=slide_ids,
            model_version=version,
            current=self.model_version,
        )
        RESTAINED.inc(len(slide_ids))
        every = session.exec(select(Cell).where(col(Cell.slide_id).in_(slide_ids))).all()
        return list(every)

    def _stain_group(
        self, session: Session, manifest: ServedManifest, cells: list[Cell]
    ) -> dict[str, list[str]]:
        """Predict the ``cells`` not yet predicted by ``manifest``'s version; their ids
        per slide."""
        with self.profile.phase(Phase.QUERY):
            done = set(
                session.exec(
                    select(Prediction.cell_id).where(
                        col(Prediction.cell_id).in_([c.id for c in cells]),
                        Prediction.model_version == manifest.model_version,
                    )
                ).all()
            )
        todo = [c for c in cells if c.id not in done]
        stained: dict[str, list[str]] = {}
        for start in range(0, len(todo), self._settings.max_batch):
            chunk = todo[start : start + self._settings.max_batch]
            with self.profile.phase(Phase.READ):
                batch = np.stack(
                    [
                        dic_unit(self._crop(c, manifest.crop_size), manifest.image_size)
                        for c in chunk
                    ]
                )
            outputs = self._infer(batch, manifest)
            self.profile.batch(len(chunk))
            for cell, output in zip(chunk, outputs, strict=True):
                session.add(self._record(cell, output, manifest))
                stained.setdefault(cell.slide_id, []).append(cell.id)
        return stained

    def _cells(self, session: Session, slide_id: str, cell_ids: Sequence[str]) -> list[Cell]:
        cells = session.exec(select(Cell).where(col(Cell.id).in_(list(cell_ids)))).all()
        found = {c.id: c for c in cells if c.slide_id == slide_id}
        missing = [i for i in cell_ids if i not in found]
        if missing:
            raise MissingCrop(f"slide {slide_id} has no cell(s) {', '.join(missing)}")
        return [found[i] for i in cell_ids]

    def _crop(self, cell: Cell, size: int) -> np.ndarray:
        """The cell's ``size`` px DIC crop (the cropping stage cuts two sizes)."""
        keys = [k for k in (cell.dic_crop_key, cell.review_crop_key) if k]
        if not keys:
            raise MissingCrop(f"cell {cell.id} has no DIC crop")
        key = next((k for k in keys if crop_size_of(k) == size), None)
        if key is None:
            sizes = ", ".join(str(crop_size_of(k)) for k in keys)
            raise MissingCrop(
                f"the served model takes {size} px crops; cell {cell.id} was cropped at "
                f"{sizes} px (STAINLESS_REGISTRATION__CROP_SIZES)"
            )
        try:
            data = self._store.get(key)
        except KeyError as exc:
            raise MissingCrop(f"the DIC crop {key} of cell {cell.id} is missing") from exc
        stream = io.BytesIO(data)
        image = decode(stream, probe(stream))
        return image if image.ndim == 2 else image[..., 0]

    def _infer(self, batch: np.ndarray, manifest: ServedManifest) -> list[CellOutput]:
        wait = self._settings.retry_backoff_s
        while True:
            started = time.perf_counter()
            try:
                outputs = self._inference.infer(batch, manifest)
            except InferenceUnavailable as exc:
                if manifest != self._manifest and not self._serves(manifest):
                    raise VersionRetired(manifest.model_version) from exc
                UNAVAILABLE.inc()
                log.warning("inference unavailable, waiting", error=str(exc), wait_s=wait)
                if self._stop.wait(wait):
                    raise HandlerInterrupted(
                        "stopped while the inference server was unavailable"
                    ) from exc
                wait = min(wait * 2, self._settings.retry_max_backoff_s)
                continue
            seconds = time.perf_counter() - started
            BATCH_SECONDS.observe(seconds)
            self.profile.add(Phase.INFER, seconds)
            return outputs

    def _record(self, cell: Cell, output: CellOutput, manifest: ServedManifest) -> Prediction:
        version = manifest.model_version.replace("/", "-")
        base = f"{self._settings.stained_prefix}/{cell.slide_id}/{cell.id}/{version}"
        stain_key, heat_key = f"{base}/stained.png", f"{base}/heatmap.png"
        with self.profile.phase(Phase.ENCODE):
            stained = encode_png((output.stained * 255 + 0.5).astype(np.uint8))
            heatmap = heatmap_png(output.heatmap)
        with self.profile.phase(Phase.STORE):
            self._store.put(stain_key, stained, content_type="image/png")
            self._store.put(heat_key, heatmap, content_type="image/png")
        predicted = output.predicted_class
        below = self._settings.review_below_probability
        reasons = review_reasons(
            delta=output.delta,
            delta_threshold=self.threshold(manifest),
            top_probability=max(output.probabilities.values(), default=None),
            probability_threshold=below if manifest.calibrated_probabilities else None,
            predicted_class=predicted,
            pathological=self._pathological,
        )
        status = ReviewStatus.NEEDS_REVIEW if reasons else ReviewStatus.PENDING
        CELLS.labels(status.value).inc()
        return Prediction(
            cell_id=cell.id,
            model_version=manifest.model_version,
            predicted_class=predicted,
            probabilities=output.probabilities,
            stain_key=stain_key,
            heatmap_key=heat_key,
            confidence=output.delta,
            confidence_variant=manifest.confidence_variant,
            uncertainty=output.gamma,
            review_status=status,
            review_reasons=[reason.value for reason in reasons],
        )


def _merge(into: dict[str, list[str]], more: dict[str, list[str]]) -> None:
    for slide_id, ids in more.items():
        into.setdefault(slide_id, []).extend(ids)


def _signed(session: Session, slide_ids: set[str]) -> set[str]:
    rows = session.exec(
        select(Slide.id).where(col(Slide.id).in_(slide_ids), Slide.status == SlideStatus.SIGNED)
    ).all()
    return set(rows)


def complete_if_done(session: Session, slide_id: str, model_version: str) -> bool:
    """Mark the slide completed and announce it once every field and cell is done.

    Done: the scanner completed the slide, every field's registration is recorded
    (accepted or rejected) and every cell has a prediction of ``model_version``. The slide
    row is locked first, so two consumers finishing at once cannot both miss it.
    """
    slide = session.exec(select(Slide).where(Slide.id == slide_id).with_for_update()).first()
    if slide is None or slide.status not in (SlideStatus.UPLOADED, SlideStatus.PROCESSING):
        return False
    fields = session.exec(
        select(func.count(func.distinct(FieldImage.index))).where(
            FieldImage.slide_id == slide_id, FieldImage.modality == Modality.DIC
        )
    ).one()
    registered = session.exec(
        select(func.count()).select_from(Registration).where(Registration.slide_id == slide_id)
    ).one()
    cells = session.exec(
        select(func.count()).select_from(Cell).where(Cell.slide_id == slide_id)
    ).one()
    predictions = session.exec(
        select(Prediction.predicted_class, Prediction.review_status)
        .join(Cell, col(Cell.id) == col(Prediction.cell_id))
        .where(Cell.slide_id == slide_id, Prediction.model_version == model_version)
    ).all()
    if registered < fields or len(predictions) < cells:
        if slide.status is SlideStatus.UPLOADED:
            slide.status = SlideStatus.PROCESSING
            session.add(slide)
        return False
    slide.status = SlideStatus.COMPLETED
    session.add(slide)
    differential = Counter(predicted for predicted, _ in predictions)
    add_event(
        session,
        Envelope.wrap(
            SlideCompleted(
                slide_id=slide_id,
                cell_count=cells,
                differential=dict(sorted(differential.items())),
                needs_review=sum(s is ReviewStatus.NEEDS_REVIEW for _, s in predictions),
            ),
            key=slide_id,
        ),
    )
    log.info("slide completed", slide_id=slide_id, cells=cells, model_version=model_version)
    return True


class InferenceHandler:
    """``cells.cropped`` and ``slides.uploaded``: stain what is new, then check completion."""

    def __init__(self, stainer: CellStainer) -> None:
        self._stainer = stainer

    def __call__(self, session: Session, envelopes: list[Envelope]) -> None:
        slides: list[str] = []
        requests: list[tuple[str, list[str]]] = []
        for envelope in envelopes:
            if envelope.topic == Topic.CELLS_CROPPED:
                cropped = envelope.parsed(CellsCropped)
                requests.append((cropped.slide_id, cropped.cell_ids))
                slide_id = cropped.slide_id
            else:
                slide_id = envelope.parsed(SlideUploaded).slide_id
            if slide_id not in slides:
                slides.append(slide_id)
        stained = self._stainer.stain_many(session, requests)
        log.info(
            "cells stained",
            events=len(envelopes),
            cells={slide: len(ids) for slide, ids in stained.items()},
        )
        profile = self._stainer.profile
        with profile.phase(Phase.RECORD):
            session.flush()  # the prediction rows and the events
        with profile.phase(Phase.COMPLETE):
            versions = self._stainer.slide_versions(session, slides)
            for slide_id in slides:
                complete_if_done(session, slide_id, versions[slide_id])


def inference_consumer(bus: EventBus, engine: Engine, stainer: CellStainer) -> Consumer:
    """The consumer group of the inference service, gathering events as its settings say."""
    settings = stainer.settings
    group = ConsumerGroup.INFERENCE
    handler = IdempotentBatchHandler(engine, group, InferenceHandler(stainer))
    return bus.consumer(
        group=group,
        topics=[Topic.CELLS_CROPPED, Topic.SLIDES_UPLOADED],
        handler=handler.single,
        batching=Batching(handler, settings.max_events, settings.max_wait_s),
    )
