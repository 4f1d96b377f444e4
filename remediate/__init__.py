"""kv-remediate: diagnose denied Azure Key Vault requests and propose (or apply) the least-privilege fix."""

__version__ = "0.1.0"
