"""The local sandbox fleet: real sshd hosts on loopback running the stand-in Titan services."""

from ripcord.sandbox.fleet import Fleet

__all__ = ["Fleet"]
