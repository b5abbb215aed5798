"""The wheel ships the JSON Schemas (schemas/ -> gateway/_schemas, pyproject.toml), every module and the `yrdx`
entry points; an installed gateway finds its schemas without `schemas_dir`, a source checkout (or editable
install) finds schemas/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gateway.schemas.registry
from gateway.schemas.registry import SOURCE_ROOT, SchemaRegistry, default_root

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = sorted(p.relative_to(ROOT / "schemas").as_posix() for p in (ROOT / "schemas").rglob("*.json"))
MODULES = sorted(p.relative_to(ROOT).as_posix() for pkg in ("gateway", "adapters") for p in (ROOT / pkg).rglob("*.py"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of a copy of the project's sources (the repo's own build/ and egg-info stay untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("gateway", "adapters", "schemas"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (built,) = out.glob("yrdx-*.whl")
    return built


def test_the_wheel_carries_every_schema_and_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SCHEMAS and MODULES
    assert [s for s in SCHEMAS if f"gateway/_schemas/{s}" not in names] == []
    assert [m for m in MODULES if m not in names] == []
    assert "gateway/py.typed" in names
    assert not any(n.startswith("schemas/") for n in names)  # no top-level `schemas` package in site-packages


def test_the_wheel_declares_the_console_script_and_the_demo_command(wheel: Path) -> None:
    """`yrdx` is gateway.cli:main; `yrdx demo` is the adapters' entry point (group yrdx.commands), so gateway/ never
    imports the demo."""
    wheel_zip = zipfile.ZipFile(wheel)
    (name,) = (n for n in wheel_zip.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel_zip.read(name).decode()
    assert "[console_scripts]\nyrdx = gateway.cli:main\n" in text
    assert "[yrdx.commands]\ndemo = adapters.cli:register_demo\n" in text


def test_an_installed_wheel_loads_its_own_schemas(wheel: Path, tmp_path: Path) -> None:
    """A pure wheel installs by unpacking: import `gateway` from there, not from the repo (cwd elsewhere)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import gateway, gateway.schemas.registry as s; r = s.SchemaRegistry.load(); "
             "print(gateway.__file__); print(s.default_root()); print(len(r.types()))")
    run = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == 0, run.stderr
    module, root, types = run.stdout.split()
    assert Path(module) == site / "gateway" / "__init__.py"
    assert Path(root) == site / "gateway" / "_schemas"
    assert int(types) == len(SchemaRegistry.load(SOURCE_ROOT).types())


def test_the_registry_loads_from_the_package_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "gateway"
    shutil.copytree(SOURCE_ROOT, package / "_schemas")
    monkeypatch.setattr(gateway.schemas.registry.importlib.resources, "files", lambda name: package)
    assert default_root() == package / "_schemas"
    assert SchemaRegistry.load().types() == SchemaRegistry.load(SOURCE_ROOT).types()


def test_a_source_checkout_loads_the_repos_schemas() -> None:
    assert default_root() == SOURCE_ROOT == ROOT / "schemas"
    assert SchemaRegistry.load().types()
