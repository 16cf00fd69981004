"""The same job for pyinfra: touch a file on every host and read it back."""

from pyinfra import host
from pyinfra.operations import files, server

home = host.data.titan_home
files.file(name="touch", path=f"{home}/state/bench.txt", touch=True)
server.shell(name="read back", commands=[f"cat {home}/state/bench.txt"])
