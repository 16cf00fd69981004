"""The local sandbox fleet: real sshd hosts on loopback running the stand-in Titan services.

Import what you need from the submodules (ripcord.sandbox.fleet.Fleet, ...): this package
imports nothing itself, so light users (the journal's paths) do not pay for the fleet manager.
"""
