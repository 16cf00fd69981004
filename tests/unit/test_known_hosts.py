"""known_hosts is parsed once for all of a run's connections (ripcord/connection.py), and read
again when the file changes: a replaced key is never checked against the old one."""

from __future__ import annotations

import os

from ripcord.connection import _host_keys

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIADzOQwHCAehL7bIrWUkxv4bQcD+szBsNjKV1mtr6PcK"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBENGLO2WZguqlJh8m0bMVyO7ez+qhsd+JX5Fws1c3sL"


def keys_of(path, name: str) -> set[str]:
    entry = _host_keys(str(path)).lookup(name) or {}
    return {key.get_base64() for key in entry.values()}


def test_parsed_once_then_again_when_the_file_changes(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:2201 {KEY_A}\n")
    assert _host_keys(str(path)) is _host_keys(str(path))  # one parse for every connection
    assert keys_of(path, "[127.0.0.1]:2201") == {KEY_A.split()[1]}

    path.write_text(f"[127.0.0.1]:2201 {KEY_B}\n")  # same size: the mtime tells it changed
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert keys_of(path, "[127.0.0.1]:2201") == {KEY_B.split()[1]}


def test_no_file_knows_no_host(tmp_path):
    assert keys_of(tmp_path / "absent", "[127.0.0.1]:2201") == set()
