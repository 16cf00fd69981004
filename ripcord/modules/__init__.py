"""Modules: one file per module (or small family). Importing this package registers them all."""

from ripcord.modules import (  # noqa: F401 - importing a module registers it
    bus,
    command,
    data,
    envfile,
    files,
    filestat,
    logic,
    service,
    waiting,
)
from ripcord.modules.base import REGISTRY, Arg, Module, Result, TaskContext, register

__all__ = ["REGISTRY", "Arg", "Module", "Result", "TaskContext", "register"]
