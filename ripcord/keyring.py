"""The OS keyring as the controller's store of the signing secret (inventory
`titan_hmac_secret_keyring: DESCRIPTION`).

On a headless Linux controller the OS keyring is the kernel's (keyrings(7)): a `user` key that
the operator adds once (`keyctl padd user DESCRIPTION @u`, the value on stdin) and that no file,
environment or process list ever shows. The kill switch reads it first thing (ripcord/fasthalt.py),
so this reads it through libkeyutils (ctypes, no process started, nothing else imported): the
process's own keyrings (thread, process, session, which normally link the user keyring) and then
the user keyring. A key that cannot be found or read is the operator's error (InputError, exit 2),
named by the inventory variable and the description, never by its value.
"""

from __future__ import annotations

import os

from ripcord.errors import InputError

VARIABLE = "titan_hmac_secret_keyring"
KEY_SPEC_USER_KEYRING = -4
_WHY = {"ENOKEY": "no such key", "EKEYEXPIRED": "the key has expired", "EKEYREVOKED": "the key was revoked",
        "EACCES": "permission denied (the key must be readable by this user: keyctl setperm, or "
                  "add it to @u as this user)"}


class KeyringError(InputError):
    """The inventory names a key this controller cannot find or read."""


def keyring_secret(hostvars: dict) -> str | None:
    """The secret in the kernel key the inventory names, or None when it names none (or a
    template, which only the play can render). KeyringError when it cannot be read."""
    description = hostvars.get(VARIABLE)
    if not isinstance(description, str) or not description or "{{" in description:
        return None
    import ctypes  # only when a key is named: the halt's first publish waits on every import

    try:
        lib = ctypes.CDLL("libkeyutils.so.1", use_errno=True)
    except OSError:
        raise _error(description, "libkeyutils is not installed (Debian: apt-get install keyutils)") from None
    lib.request_key.restype = lib.keyctl_search.restype = ctypes.c_int32
    lib.request_key.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int32]
    lib.keyctl_search.argtypes = [ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int32]
    lib.keyctl_read.argtypes = [ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t]
    lib.keyctl_read.restype = ctypes.c_long
    name = description.encode()
    key = lib.request_key(b"user", name, None, 0)  # thread, process, session keyrings
    if key < 0:
        key = lib.keyctl_search(KEY_SPEC_USER_KEYRING, b"user", name, 0)
    if key < 0:
        raise _error(description, _reason(ctypes.get_errno()))
    size = 4096
    while True:
        buffer = ctypes.create_string_buffer(size)
        length = lib.keyctl_read(key, buffer, size)
        if length < 0:
            raise _error(description, _reason(ctypes.get_errno()))
        if length <= size:
            break
        size = length
    value = buffer.raw[:length].decode(errors="replace").strip()
    ctypes.memset(buffer, 0, size)
    if not value:
        raise _error(description, "the key is empty")
    return value


def _reason(errno: int) -> str:
    import errno as codes

    name = codes.errorcode.get(errno, "")
    return _WHY.get(name) or os.strerror(errno)


def _error(description: str, why: str) -> KeyringError:
    return KeyringError(f"{VARIABLE}: cannot read the kernel key user:{description!r}: {why} "
                        f"(`keyctl padd user {description} @u` adds it, the secret on stdin)")
