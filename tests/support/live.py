"""Live mode on loopback (no tests here): the App Service managed-identity token endpoint, answered here and
recording the audiences asked for, and the environment that points the CLI's live path (DefaultAzureCredential
and every SDK client) at the bundled emulator with proxies closed, so nothing can leave the machine."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from remediate.emulator import Emulator
from tests.support.loopback import JsonHandler

DEMO = Path(str(resources.files("remediate").joinpath("demo")))
TENANT = json.loads((DEMO / "tenant.json").read_text())
DEAD_PROXY = "http://127.0.0.1:9"
HEADER = "test-identity-header"


class TokenEndpoint(JsonHandler):
    """The App Service managed-identity endpoint (api-version 2019-08-01): a token per requested resource."""

    resources: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if self.headers.get("X-IDENTITY-HEADER") != HEADER or query.get("api-version") != ["2019-08-01"]:
            self.send_response(400)
            self.end_headers()
            return
        resource = query["resource"][0]
        self.resources.append(resource)
        self.reply({"access_token": "fake-token", "expires_on": str(int(time.time()) + 3600), "resource": resource,
                    "token_type": "Bearer"})


def live_env(emu: Emulator, identity_endpoint: str, tmp: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "SSL_CERT_FILE": emu.ca_file,
            "REQUESTS_CA_BUNDLE": emu.ca_file, "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
            "IDENTITY_ENDPOINT": identity_endpoint, "IDENTITY_HEADER": HEADER,
            "KV_REMEDIATE_ARM_ENDPOINT": emu.base_url, "KV_REMEDIATE_GRAPH_ENDPOINT": emu.base_url,
            "AZURE_SUBSCRIPTION_IDS": ",".join(TENANT["subscriptions"]),
            "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "NO_PROXY": "127.0.0.1,localhost",
            "AZURE_CORE_COLLECT_TELEMETRY": "0"}
