"""Unit tests import check modules directly: register the markers checks/conftest.py declares.
Files that are no package (checks/, the sandbox's stand-ins) are loaded by path: the fixtures
load_check and titan_common."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "checks"


def load_file(path: Path, name: str):
    """The Python file at path, as a module of its own called name."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    load_file(CHECKS / "conftest.py", "ripcord_checks_conftest").pytest_configure(config)


@pytest.fixture
def load_check():
    """load_check(name) -> checks/<name>.py as a module (each call a fresh one)."""
    return lambda name: load_file(CHECKS / f"{name}.py", f"checks_{name}")


@pytest.fixture(scope="module")
def titan_common():
    """sandbox/titan/common.py, what the stand-in services share (signing, fingerprints), loaded
    once for a test module."""
    return load_file(REPO / "sandbox" / "titan" / "common.py", "titan_common")
