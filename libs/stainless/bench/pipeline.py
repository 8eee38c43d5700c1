"""Pipeline throughput on embedded defaults beside inference alone on the same cells.

One phantom slide goes through the demo's pipeline (upload through the ingestion API,
registration and cropping, the inference consumer, completion) in a temporary folder.
Then the same cells' DIC crops go through the inference port alone, in micro-batches of
the sizes the stage sent (its profile records them), in the same process:

* ``pipeline_cells_per_s``: cells over the seconds from the first upload to completion;
* ``inference_stage_cells_per_s``: cells over the seconds the inference consumer spent
  (crops read, port called, PNGs stored, rows and events written);
* ``inference_cells_per_s``: cells over the seconds of the port calls alone, in the
  consumer's micro-batches (warmed up, median of three passes);
* ``overhead_ratio`` = inference stage / inference alone (what the service wiring costs);
* ``end_to_end_ratio`` = pipeline / inference alone (registration and cropping included);
* ``stage_profile``: where the stage's seconds went, per phase (``stages.inference.profile``)
  in total and per micro-batch, with ``other`` the rest of the consumer's time (the
  commit, the bus, the gathering of events);
* ``peak_rss_mb``: peak resident memory of this process.
"""

from __future__ import annotations

import io
import itertools
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, select

from stainless.core.config import DatabaseSettings, InferenceSettings, Settings, StoreSettings
from stainless.core.db.engine import create_db_engine
from stainless.core.db.models import Cell
from stainless.core.inference.local import LocalInference
from stainless.core.storage.local import LocalObjectStore
from stainless.demo import run_demo
from stainless.imaging.codecs import decode, probe
from stainless.imaging.inputs import dic_unit


def run_pipeline_bench(*, checkpoint: Path, fields: int = 12, seed: int = 11) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            database=DatabaseSettings(url=f"sqlite:///{root / 'stainless.db'}"),
            store=StoreSettings(root=root / "store"),
            inference=InferenceSettings(model_repository=str(root / "models")),
        )
        summary_path, slide_id = run_demo(
            settings, out=root / "demo", fields=fields, seed=seed, checkpoint=checkpoint
        )
        summary = json.loads(summary_path.read_text())
        store = LocalObjectStore(root / "store")
        engine = create_db_engine(settings.database)
        with Session(engine) as session:
            cells = session.exec(select(Cell).where(Cell.slide_id == slide_id)).all()
        engine.dispose()
        inference = LocalInference(root / "models")
        size = inference.manifest.image_size
        crops = []
        for cell in sorted(cells, key=lambda c: c.field_index):
            stream = io.BytesIO(store.get(cell.dic_crop_key or ""))
            crops.append(dic_unit(decode(stream, probe(stream)), size))
        profile = summary["inference_profile"]
        starts = np.cumsum([0, *profile["batch_sizes"]])
        batches = [np.stack(crops[a:b]) for a, b in itertools.pairwise(starts)]
        inference.infer(batches[0])  # TorchScript optimises on its first calls
        inference.infer(batches[0])
        repeats = []
        for _ in range(3):
            started = time.perf_counter()
            for chunk in batches:
                inference.infer(chunk)
            repeats.append(time.perf_counter() - started)
        inference_s = float(np.median(repeats))
    count = sum(len(b) for b in batches)
    if count == 0:
        raise RuntimeError("the phantom slide gave no cells: try more fields")
    seconds = summary["seconds"]
    phases = profile["seconds"]
    other = seconds["inference"] - sum(phases.values())
    pipeline = count / seconds["pipeline"]
    stage = count / seconds["inference"]
    alone = count / inference_s
    return {
        "cells": count,
        "fields": fields,
        "model_version": summary["model_version"],
        "pipeline_cells_per_s": pipeline,
        "inference_stage_cells_per_s": stage,
        "inference_cells_per_s": alone,
        "overhead_ratio": stage / alone,
        "end_to_end_ratio": pipeline / alone,
        "seconds": seconds,
        "stage_profile": {
            "batch_sizes": profile["batch_sizes"],
            "seconds": {**phases, "other": round(other, 4)},
            "ms_per_batch": {
                **profile["ms_per_batch"],
                "other": round(1000 * other / len(batches), 2),
            },
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
