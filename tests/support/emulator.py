"""Shared constants and SDK client factories for the emulator tests (no tests here).

Every client is a real azure-mgmt / azure-core client pointed at the loopback emulator with a fake credential.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.core import AsyncPipelineClient, PipelineClient
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    BearerTokenCredentialPolicy,
    RetryPolicy,
)
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.aio import AuthorizationManagementClient as AsyncAuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.aio import KeyVaultManagementClient as AsyncKeyVaultManagementClient

from remediate.emulator import Emulator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tenants"
EXAMPLES = FIXTURES / "arm-examples"
SMALL = FIXTURES / "small.json"

TENANT = "72f988bf-0000-0000-0000-000000000001"
SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-app"
KV_RBAC = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-rbac"
KV_POLICY = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-policy"
MG_ROOT = "/providers/Microsoft.Management/managementGroups/root"
APP = "11111111-0000-0000-0000-000000000001"      # service principal, in app-team (in kv-admins)
MI = "11111111-0000-0000-0000-000000000002"       # service principal with an access policy on kv-policy
ANA = "11111111-0000-0000-0000-000000000003"      # user
KV_ADMINS = "22222222-0000-0000-0000-000000000001"
APP_TEAM = "22222222-0000-0000-0000-000000000002"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KV_READER = "21090545-7ca7-4776-b22c-e363652d74d2"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
FAST_RETRY: dict[str, Any] = {"retry_backoff_factor": 0.01, "retry_backoff_max": 0.05, "retry_status": 10,
                              "retry_read": 10, "retry_connect": 10}


def err_code(e: pytest.ExceptionInfo[Any]) -> str:
    """The ARM error code the SDK parsed from an error response."""
    assert e.value.error is not None, e.value
    return str(e.value.error.code)


def small() -> dict[str, Any]:
    """The small test tenant as a fresh dict."""
    data: dict[str, Any] = json.loads(SMALL.read_text())
    return data


def example(path: str) -> dict[str, Any]:
    """One request/response example from azure-rest-api-specs."""
    data: dict[str, Any] = json.loads((EXAMPLES / path).read_text())
    return data


def kv_client(emu: Emulator, sub: str = SUB, **kw: Any) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(emu.credential(), sub, base_url=emu.base_url, connection_verify=emu.ca_file,
                                    **kw)


def auth_client(emu: Emulator, sub: str = SUB, **kw: Any) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(emu.credential(), sub, base_url=emu.base_url,
                                         connection_verify=emu.ca_file, **kw)


def async_kv_client(emu: Emulator, sub: str = SUB, **kw: Any) -> AsyncKeyVaultManagementClient:
    return AsyncKeyVaultManagementClient(emu.async_credential(), sub, base_url=emu.base_url,
                                         connection_verify=emu.ca_file, **kw)


def async_auth_client(emu: Emulator, sub: str = SUB, **kw: Any) -> AsyncAuthorizationManagementClient:
    return AsyncAuthorizationManagementClient(emu.async_credential(), sub, base_url=emu.base_url,
                                              connection_verify=emu.ca_file, **kw)


def pipeline(emu: Emulator, scope: str = "https://graph.microsoft.com/.default") -> PipelineClient[Any, Any]:
    """A plain azure-core client (how the product calls Graph and Log Analytics)."""
    return PipelineClient(base_url=emu.base_url, connection_verify=emu.ca_file,
                          policies=[RetryPolicy(retry_backoff_factor=0.01),
                                    BearerTokenCredentialPolicy(emu.credential(), scope)])


def async_pipeline(emu: Emulator,
                   scope: str = "https://graph.microsoft.com/.default") -> AsyncPipelineClient[Any, Any]:
    return AsyncPipelineClient(base_url=emu.base_url, connection_verify=emu.ca_file,
                               policies=[AsyncBearerTokenCredentialPolicy(emu.async_credential(), scope)])
