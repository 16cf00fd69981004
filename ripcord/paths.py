"""Where ripcord's own data lives: the checkout's directories, or the installed package's copies.

The repository keeps playbooks/, checks/, templates/ and inventory/topology.yml at its root (tests
and docs refer to them there); a wheel carries copies inside the package (ripcord/playbooks, ...,
see pyproject's package-dir). One function answers "where is it" for both, so nothing else guesses
with parents[1]. An operator's own playbooks and checks come from configuration (ripcord.config),
never from editing these directories.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def checkout() -> Path | None:
    """The repository root when ripcord runs from its checkout (an editable install), else None."""
    root = PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "playbooks").is_dir():
        return root
    return None


# ripcord/inventory.py is a module already; the sandbox's stand-in Titan services are sandbox/titan
INSTALLED_AS = {"inventory": "inventory_data", "sandbox/titan": "standins"}


def data_dir(name: str) -> Path:
    """The shipped directory `name` (playbooks, checks, templates, inventory, sandbox/titan) in force."""
    root = checkout()
    return root / name if root else PACKAGE / INSTALLED_AS.get(name, name)
