"""ripcord: agentless incident remediation for the Titan trading fleet."""

__version__ = "0.1.0"
