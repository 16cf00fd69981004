"""Unit tests import check modules directly: register the markers checks/conftest.py declares."""

import importlib.util
from pathlib import Path

CHECKS_CONFTEST = Path(__file__).resolve().parents[2] / "checks" / "conftest.py"


def pytest_configure(config):
    spec = importlib.util.spec_from_file_location("ripcord_checks_conftest", CHECKS_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.pytest_configure(config)
