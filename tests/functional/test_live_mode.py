"""Live mode end to end: the code path that runs in Azure (DefaultAzureCredential and every SDK client, no
--snapshot) pointed at loopback servers through the documented settings.

- ``KV_REMEDIATE_ARM_ENDPOINT`` / ``KV_REMEDIATE_GRAPH_ENDPOINT``: the bundled HTTPS emulator (strict: it refuses
  unknown routes and filters the way ARM and Graph do);
- ``SSL_CERT_FILE``: the emulator's CA, trusted as the SDKs trust any CA bundle (Python's default SSL context);
- ``AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential`` with ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``: the App
  Service / Functions managed-identity protocol, answered by a loopback token endpoint that records the audiences
  it was asked for.

Proxies point at a closed loopback port with NO_PROXY for loopback only, so nothing can leave the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remediate.clouds import CLOUDS, PUBLIC, cloud_from_env
from remediate.emulator import Emulator
from remediate.errors import ConfigError, InputError
from tests.support.live import DEAD_PROXY, DEMO, TENANT, live_env


def test_live_mode_diagnoses_through_the_real_credential_and_sdks(tmp_path: Path,
                                                                  token_endpoint: tuple[str, list[str]]) -> None:
    identity_endpoint, asked = token_endpoint
    # given the demo tenant behind a strict HTTPS server and a managed identity on loopback
    with Emulator(TENANT) as emu:
        endpoint = emu.base_url
        snapshot_out = subprocess.run(
            [sys.executable, "-m", "remediate", "diagnose", str(DEMO / "inputs" / "01_audit_events.json"),
             "--snapshot", str(DEMO / "tenant.json"), "--output", "json"],
            capture_output=True, text=True, timeout=120, check=True)
        # when the CLI runs in live mode (no --snapshot) with the endpoint settings
        live = subprocess.run(
            [sys.executable, "-m", "remediate", "diagnose", str(DEMO / "inputs" / "01_audit_events.json"),
             "--output", "json"], capture_output=True, text=True, timeout=120, check=False,
            env=live_env(emu, identity_endpoint, tmp_path))
    assert live.returncode == 0, live.stderr
    # then it reaches the same causes and plans as the snapshot path
    got, want = json.loads(live.stdout), json.loads(snapshot_out.stdout)
    assert [(f["cause"], f["plan"]) for f in got["findings"]] == [(f["cause"], f["plan"]) for f in want["findings"]]
    # and it asked the managed identity for tokens of the configured endpoints' audiences, nothing else
    assert set(asked) == {endpoint}


@pytest.mark.parametrize(("env", "arm", "graph", "logs"), [
    ({}, "https://management.azure.com", "https://graph.microsoft.com", "https://api.loganalytics.io"),
    ({"AZURE_CLOUD": "AzureUSGovernment"}, "https://management.usgovcloudapi.net", "https://graph.microsoft.us",
     "https://api.loganalytics.us"),
    ({"AZURE_CLOUD": "azurechinacloud"}, "https://management.chinacloudapi.cn",
     "https://microsoftgraph.chinacloudapi.cn", "https://api.loganalytics.azure.cn"),
    ({"AZURE_CLOUD": "AzureUSGovernment", "KV_REMEDIATE_GRAPH_ENDPOINT": "https://dod-graph.microsoft.us/"},
     "https://management.usgovcloudapi.net", "https://dod-graph.microsoft.us", "https://api.loganalytics.us"),
])
def test_clouds_and_endpoint_overrides(env: dict[str, str], arm: str, graph: str, logs: str) -> None:
    cloud = cloud_from_env(env)
    assert (cloud.arm, cloud.graph, cloud.logs) == (arm, graph, logs)
    assert cloud.arm_scope == f"{arm}/.default" and cloud.graph_scope == f"{graph}/.default"


@pytest.mark.parametrize(("env", "setting"), [
    ({"AZURE_CLOUD": "AzureGermanCloud"}, "AZURE_CLOUD"),
    ({"KV_REMEDIATE_ARM_ENDPOINT": "http://management.azure.com"}, "KV_REMEDIATE_ARM_ENDPOINT"),
    ({"KV_REMEDIATE_LOGS_ENDPOINT": "https://api.loganalytics.io/v1/workspaces"}, "KV_REMEDIATE_LOGS_ENDPOINT"),
    ({"KV_REMEDIATE_GRAPH_ENDPOINT": "graph.microsoft.com"}, "KV_REMEDIATE_GRAPH_ENDPOINT"),
])
def test_unusable_cloud_settings_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        cloud_from_env(env)
    assert err.value.setting == setting and setting in err.value.message


@pytest.mark.parametrize("cloud", list(CLOUDS.values()), ids=lambda c: c.name)
def test_search_links_are_accepted_on_the_clouds_own_log_analytics_host(cloud: Any) -> None:
    from remediate.facts.loganalytics import link_target

    ws = "11111111-2222-4333-8444-555555555555"
    assert link_target(f"{cloud.logs}/v1/workspaces/{ws}/query", cloud.logs_hosts()).workspace == ws
    other = next(c for c in CLOUDS.values() if c is not cloud)
    with pytest.raises(InputError):
        link_target(f"{other.logs}/v1/workspaces/{ws}/query", cloud.logs_hosts())


def test_every_cloud_has_https_endpoints_and_vault_suffixes() -> None:
    for cloud in CLOUDS.values():
        assert all(u.startswith("https://") for u in (cloud.arm, cloud.graph, cloud.logs))
        assert cloud.vault_suffix.startswith("vault.") and cloud.hsm_suffix.startswith("managedhsm.")
    assert PUBLIC.logs_hosts() == {"api.loganalytics.io", "api.loganalytics.azure.com"}


def test_cli_refuses_an_unknown_cloud_with_one_line(tmp_path: Path) -> None:
    got = subprocess.run([sys.executable, "-m", "remediate", "diagnose", str(DEMO / "inputs" / "01_audit_events.json"),
                          "--output", "json"], capture_output=True, text=True, timeout=60, check=False,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AZURE_CLOUD": "Mars",
                              "AZURE_SUBSCRIPTION_IDS": TENANT["subscriptions"][0], "HTTPS_PROXY": DEAD_PROXY,
                              "HTTP_PROXY": DEAD_PROXY, "NO_PROXY": "127.0.0.1"})
    assert got.returncode == 2 and got.stdout == ""
    assert len(got.stderr.strip().splitlines()) == 1 and "AZURE_CLOUD" in got.stderr
