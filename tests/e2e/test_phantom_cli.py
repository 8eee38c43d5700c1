"""``stainless phantom`` as a user runs it: full-size fields, byte-identical for one seed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

STAINLESS = [sys.executable, "-m", "stainless.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STAINLESS, *args], capture_output=True, text=True, timeout=900, check=False
    )


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_two_runs_with_one_seed_give_identical_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        done = _run("phantom", "--slides", "2", "--fields", "3", "--out", str(out), "--seed", "1")
        assert done.returncode == 0, done.stderr
    assert _digests(first) == _digests(second)

    manifest = json.loads((first / "manifest.json").read_text())
    fields = [f for slide in manifest["slides"] for f in slide["fields"]]
    assert len(fields) == 6
    for field in fields:
        dic = tifffile.imread(first / field["dic"])
        assert dic.shape == (1544, 2064) and dic.dtype == np.uint16
        assert (field["width"], field["height"]) == (2064, 1544)
        assert np.asarray(field["affine_bf_to_dic"]).shape == (2, 3)
        assert field["cells"], "every field holds white cells"
        for cell in field["cells"]:
            assert cell["class"] in {"ART", "BA", "EO", "LY", "MO", "SNE", "SMU"}
            x0, y0, x1, y1 = cell["box_dic"]
            assert 0 <= x0 < x1 <= 2064 and 0 <= y0 < y1 <= 1544
    assert (first / "phantom.png").read_bytes().startswith(b"\x89PNG")


def test_another_seed_gives_other_files(tmp_path: Path) -> None:
    size = ["--fields", "1", "--width", "320", "--height", "256"]
    assert _run("phantom", *size, "--out", str(tmp_path / "a"), "--seed", "1").returncode == 0
    assert _run("phantom", *size, "--out", str(tmp_path / "b"), "--seed", "2").returncode == 0
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["slide_000/field_000_dic.tif"] != b["slide_000/field_000_dic.tif"]


def test_a_clinical_slide_holds_the_clinical_classes(tmp_path: Path) -> None:
    size = ["--fields", "4", "--width", "768", "--height", "576", "--slide", "left-shift"]
    done = _run("phantom", *size, "--out", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    classes = {c["class"] for f in manifest["slides"][0]["fields"] for c in f["cells"]}
    assert classes and classes <= {"NE", "IG", "MO", "LY", "EO", "BA", "ERB", "ART"}
    unknown = _run("phantom", "--slide", "healthyish", "--out", str(tmp_path / "b"))
    assert unknown.returncode == 2 and "unknown slide preset 'healthyish'" in unknown.stderr
    assert not (tmp_path / "b").exists()
    figure = tmp_path / "classes.png"
    assert _run("phantom-classes", str(figure)).returncode == 0
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_bad_arguments_get_a_message_and_write_nothing(tmp_path: Path) -> None:
    done = _run("phantom", "--slides", "0", "--out", str(tmp_path / "x"))
    assert done.returncode != 0
    assert "slides" in done.stderr
    assert not (tmp_path / "x").exists()


def test_malformed_setting_stops_the_cli_with_the_variable_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [*STAINLESS, "settings"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "STAINLESS_BUS__BACKEND": "carrier-pigeon"},
    )
    assert done.returncode == 2
    assert "STAINLESS_BUS__BACKEND" in done.stderr


def test_too_small_a_field_is_refused(tmp_path: Path) -> None:
    done = _run("phantom", "--width", "100", "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "invalid phantom configuration: width" in done.stderr
    assert not (tmp_path / "x").exists()
