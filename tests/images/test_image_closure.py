"""Each image installs what its entry points import: its closure, tested without Docker.

``infra/image_envs.py`` builds ``.venv-images/<image>/`` with exactly what the image's
Dockerfile installs (``pip install --constraint requirements.txt ./libs ./<folder>``). In
that environment, with no PYTHONPATH and from a folder outside the repository:

* every console script of the distribution's ``[project.scripts]`` imports;
* every service runs its image's ENTRYPOINT (and CMD) on embedded defaults — SQLite
  migrated by ``stainless db upgrade`` as the chart's migration Job does, a local store, the
  in-process bus — until ``/health/live`` answers on the port its Dockerfile sets; the
  worker's broker is the machine's Redis, and the inference consumer's Triton URL is a
  port where nothing listens (it starts without the server and is live, not ready);
* a package the image does not install (torch in a service image) does not import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path

import image_envs
import pytest

ROOT = Path(__file__).resolve().parents[2]
LIVE_TIMEOUT_S = 60.0

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


IMAGES: tuple[str, ...] = image_envs.IMAGES
SERVICES: tuple[str, ...] = image_envs.SERVICES


def _scripts(image: str) -> dict[str, str]:
    project = ROOT / image_envs.folder(image) / "pyproject.toml"
    scripts: dict[str, str] = tomllib.loads(project.read_text())["project"]["scripts"]
    return scripts


ENTRY_POINTS = [(image, script) for image in IMAGES for script in sorted(_scripts(image))]


def _final_stage(image: str) -> list[tuple[str, str]]:
    """``(KEYWORD, value)`` of the Dockerfile's last stage: what the container runs."""
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in image_envs.instructions(image_envs.dockerfile(image)):
        keyword, _, value = instruction.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), value.strip()))
    return stages[-1]


def _image_command(image: str) -> list[str]:
    """ENTRYPOINT then CMD (exec form), as the container starts."""
    command: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):
        values = [v for k, v in _final_stage(image) if k == keyword]
        if values:
            command += json.loads(values[-1])
    return command


def _port_setting(image: str) -> str:
    """The setting (environment variable) the Dockerfile sets the service's port with."""
    env = " ".join(v for k, v in _final_stage(image) if k == "ENV")
    (variable,) = re.findall(rf"\b(STAINLESS_{image.upper()}__\w+_PORT)=\d+", env)
    return str(variable)


def _health_path(image: str) -> str:
    (check,) = [v for k, v in _final_stage(image) if k == "HEALTHCHECK"]
    match = re.search(r"http://127\.0\.0\.1:\d+(/[\w/]+)", check)
    assert match is not None, check
    return match.group(1)


def _environment(env: Path, home: Path, **settings: str) -> dict[str, str]:
    """The caller's environment less any Python or Stainless setting, plus ``settings``:
    no PYTHONPATH, the image environment's bin/ first on PATH, HOME in a temp folder."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("PYTHON", "STAINLESS_")) and key != "VIRTUAL_ENV"
    }
    return clean | {
        "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "MPLCONFIGDIR": str(home / "matplotlib"),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def _python(env: Path, code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env / "bin" / "python"), "-c", code, *args],
        cwd=cwd,
        env=_environment(env, cwd),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def image_env() -> Callable[[str], Path]:
    """Builds (first time, or when an input changed) or refreshes an image's environment."""
    built: dict[str, Path] = {}

    def get(image: str) -> Path:
        if image not in built:
            built.update(image_envs.build([image]))
        return built[image]

    return get


@pytest.fixture(scope="session")
def migrated_sqlite(
    image_env: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An empty, migrated SQLite database, made as the chart's migration Job does:
    ``stainless db upgrade`` in the ingestion image."""
    folder = tmp_path_factory.mktemp("migrated")
    database = folder / "stainless.db"
    env = image_env("ingestion")
    done = subprocess.run(
        [str(env / "bin" / "stainless"), "db", "upgrade"],
        cwd=folder,
        env=_environment(env, folder, STAINLESS_DATABASE__URL=f"sqlite:///{database}"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stainless db upgrade failed:\n{done.stdout}\n{done.stderr}"
    return database


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_installs_only_its_distribution(image: str) -> None:
    """What the image installs is what its pyproject.toml says, and so what this test gets."""
    assert image_envs.dockerfile_install(image) == image_envs.expected_install(image)


@pytest.mark.parametrize(("image", "script"), ENTRY_POINTS)
def test_entry_point_imports_in_its_image(
    image: str, script: str, image_env: Callable[[str], Path], tmp_path: Path
) -> None:
    env = image_env(image)
    assert (env / "bin" / script).is_file(), f"{image}: no console script {script}"
    target = _scripts(image)[script]
    code = (
        "import importlib, sys\n"
        "import stainless.core.config\n"
        "module_name, _, attribute = sys.argv[1].partition(':')\n"
        "module = importlib.import_module(module_name)\n"
        "entry = module\n"
        "for part in attribute.split('.'):\n"
        "    entry = getattr(entry, part)\n"
        "assert callable(entry), sys.argv[1]\n"
        "print(module.__file__)\n"
        "print(stainless.core.config.__file__)\n"
    )
    result = _python(env, code, tmp_path, target)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{image}: {target} does not import:\n{output[-4000:]}"
    for path in result.stdout.split():  # non-editable copies inside the environment
        assert Path(path).resolve().is_relative_to(env.resolve()), f"{path} is outside {env}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_starts_and_is_live(
    service: str,
    image_env: Callable[[str], Path],
    migrated_sqlite: Path,
    redis_url: str,
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    env = image_env(service)
    command = _image_command(service)
    program = env / "bin" / command[0]
    assert program.is_file(), f"{service}: the image's entry point {command[0]} is not installed"
    database = tmp_path / "stainless.db"
    shutil.copyfile(migrated_sqlite, database)
    port = free_port()
    settings = {
        "STAINLESS_DATABASE__URL": f"sqlite:///{database}",
        "STAINLESS_STORE__ROOT": str(tmp_path / "store"),
        "STAINLESS_LOG__FORMAT": "console",
        _port_setting(service): str(port),
    }
    if service == "worker":  # a Celery worker needs its broker: Redis
        settings |= {
            "STAINLESS_TASKS__EAGER": "false",
            "STAINLESS_TASKS__BROKER_URL": f"{redis_url}/11",
            "STAINLESS_TASKS__RESULT_BACKEND": f"{redis_url}/12",
        }
    if service == "inference":  # the image has the Triton adapter only (no torch)
        models = tmp_path / "models"
        models.mkdir()
        manifest = {
            "name": "closure-test",
            "version": 1,
            "image_size": 64,
            "classes": ["a", "b"],
            "k": 1,
            "alpha": 0.0,
            "review_threshold": 0.5,
        }
        (models / "stainless.json").write_text(json.dumps(manifest))
        settings |= {
            "STAINLESS_INFERENCE__BACKEND": "triton",
            "STAINLESS_INFERENCE__PROTOCOL": "grpc",
            "STAINLESS_INFERENCE__URL": f"127.0.0.1:{free_port()}",  # nothing listens
            "STAINLESS_INFERENCE__MODEL_REPOSITORY": str(models),
        }
    url = f"http://127.0.0.1:{port}{_health_path(service)}"
    log = tmp_path / f"{service}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(program), *command[1:]],
            cwd=tmp_path,
            env=_environment(env, tmp_path, **settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Celery's children stop with it
        )
    try:
        status = _wait_live(process, url)
    finally:
        _terminate(process)
    output = log.read_text(errors="replace")
    assert status == 200, (
        f"{service}: {' '.join(command)} was not live at {url} within {LIVE_TIMEOUT_S:.0f} s "
        f"(exit status {process.returncode}):\n{output[-4000:]}"
    )


def _wait_live(process: subprocess.Popen[bytes], url: str) -> int | None:
    """The status of ``url`` once it answers 200; None if the process exits or time is up."""
    deadline = time.monotonic() + LIVE_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return 200
        except OSError:
            pass
        time.sleep(0.3)
    return None


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, then SIGKILL after 20 s."""
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.parametrize(
    ("image", "package", "installed"),
    [
        *((service, "torch", False) for service in SERVICES),
        ("ingestion", "ray", False),
        ("training", "torch", True),  # the same check passes where the image installs it
        ("training", "ray", True),
    ],
)
def test_closure_is_real(
    image: str, package: str, installed: bool, image_env: Callable[[str], Path], tmp_path: Path
) -> None:
    """A package an image does not install does not import there: nothing leaks in."""
    env = image_env(image)
    result = _python(env, f"import stainless.core.config\nimport {package}", tmp_path)
    if installed:
        assert result.returncode == 0, result.stderr[-4000:]
    else:
        assert result.returncode != 0, f"{package} imports in the {image} image's environment"
        assert f"ModuleNotFoundError: No module named '{package}'" in result.stderr, result.stderr
