"""Modules: one file per module family, imported when a playbook first names one of them
(see LOCATIONS in base.py). Add a module: write it with @register, and list it in LOCATIONS."""

from ripcord.modules.base import REGISTRY, Arg, Module, Result, TaskContext, register

__all__ = ["REGISTRY", "Arg", "Module", "Result", "TaskContext", "register"]
