"""Which Azure cloud to talk to: the ARM, Microsoft Graph and Log Analytics endpoints, and the Key Vault DNS suffixes.

``AZURE_CLOUD`` picks a national cloud (AzureCloud, AzureUSGovernment, AzureChinaCloud; the names ``az cloud list``
uses); ``KV_REMEDIATE_ARM_ENDPOINT``, ``KV_REMEDIATE_GRAPH_ENDPOINT`` and ``KV_REMEDIATE_LOGS_ENDPOINT`` override
single endpoints (an https URL each). The sign-in authority is azure-identity's own ``AZURE_AUTHORITY_HOST``; it is
read by azure-identity, not here. Token scopes follow the endpoint (``{endpoint}/.default``), as each service
documents, so an overridden endpoint is asked for a token of its own audience.

Sources (Microsoft Learn): "Azure Government developer guide" (management.usgovcloudapi.net, graph.microsoft.us,
vault.usgovcloudapi.net, api.loganalytics.us), "Azure China developer guide" (management.chinacloudapi.cn,
microsoftgraph.chinacloudapi.cn, vault.azure.cn) and "Azure Monitor Log Analytics API request format"
(api.loganalytics.io / api.loganalytics.azure.cn).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from .errors import ConfigError

CLOUD_SETTING = "AZURE_CLOUD"
ARM_SETTING = "KV_REMEDIATE_ARM_ENDPOINT"
GRAPH_SETTING = "KV_REMEDIATE_GRAPH_ENDPOINT"
LOGS_SETTING = "KV_REMEDIATE_LOGS_ENDPOINT"


@dataclass(frozen=True)
class Cloud:
    """The endpoints of one Azure cloud (no trailing slash) and its Key Vault host suffixes."""

    name: str
    arm: str
    graph: str
    logs: str
    vault_suffix: str
    hsm_suffix: str

    @property
    def arm_scope(self) -> str:
        return f"{self.arm}/.default"

    @property
    def graph_scope(self) -> str:
        return f"{self.graph}/.default"

    @property
    def logs_scope(self) -> str:
        return f"{self.logs}/.default"

    def logs_hosts(self) -> frozenset[str]:
        """Log Analytics hosts an alert's search link may name in this cloud (the endpoint's, and the aliases)."""
        hosts = {urlsplit(self.logs).hostname or ""}
        if self.name == "AzureCloud":
            hosts |= {"api.loganalytics.io", "api.loganalytics.azure.com"}
        return frozenset(h for h in hosts if h)


CLOUDS: dict[str, Cloud] = {c.name.lower(): c for c in (
    Cloud("AzureCloud", "https://management.azure.com", "https://graph.microsoft.com", "https://api.loganalytics.io",
          "vault.azure.net", "managedhsm.azure.net"),
    Cloud("AzureUSGovernment", "https://management.usgovcloudapi.net", "https://graph.microsoft.us",
          "https://api.loganalytics.us", "vault.usgovcloudapi.net", "managedhsm.usgovcloudapi.net"),
    Cloud("AzureChinaCloud", "https://management.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn",
          "https://api.loganalytics.azure.cn", "vault.azure.cn", "managedhsm.azure.cn"),
)}
PUBLIC = CLOUDS["azurecloud"]


def _endpoint(setting: str, value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment or (parts.path not in ("", "/")):
        raise ConfigError(f"setting {setting}: is not an https endpoint (give the service's base URL, e.g. "
                          "https://management.usgovcloudapi.net)", setting)
    return f"https://{parts.netloc}"


def cloud_from_env(env: Mapping[str, str]) -> Cloud:
    """The cloud ``AZURE_CLOUD`` names (default AzureCloud) with any endpoint overrides; errors name the setting."""
    name = (env.get(CLOUD_SETTING) or "").strip()
    cloud = CLOUDS.get(name.lower()) if name else PUBLIC
    if cloud is None:
        raise ConfigError(f"setting {CLOUD_SETTING}: {name!r} is not a known cloud; use one of "
                          f"{', '.join(c.name for c in CLOUDS.values())}, or set {ARM_SETTING}, {GRAPH_SETTING} and "
                          f"{LOGS_SETTING} for another", CLOUD_SETTING)
    overrides = {field: _endpoint(setting, env[setting]) for field, setting in
                 (("arm", ARM_SETTING), ("graph", GRAPH_SETTING), ("logs", LOGS_SETTING))
                 if (env.get(setting) or "").strip()}
    return replace(cloud, **overrides) if overrides else cloud
