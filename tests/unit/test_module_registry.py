"""The lazy module registry: every listed module loads from its file, every module file is listed."""

import importlib
import pkgutil

import ripcord.modules
from ripcord.modules.base import LOCATIONS, REGISTRY


def test_every_listed_module_loads_under_its_own_name():
    for name in LOCATIONS:
        assert REGISTRY[name].name == name


def test_every_module_file_is_listed():
    for info in pkgutil.iter_modules(ripcord.modules.__path__):
        importlib.import_module(f"ripcord.modules.{info.name}")
    assert set(REGISTRY.classes) - {"t_file"} <= set(LOCATIONS)
