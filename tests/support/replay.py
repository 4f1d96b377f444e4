"""A loopback HTTPS server that answers only recorded interactions (tests/fixtures/recordings), for the replay
suite: the real SDK clients talk to it exactly as to ARM, and anything not recorded is refused.

A request matches an interaction on method, path (exact, case-sensitive) and every query parameter except
``api-version``: the recordings were made by older clients (2018-02-14, 2015-11-01, ...), our SDKs send their own
version, and the version each request carried is kept in ``served`` so a test can say so. Everything else
(another filter, another path, a missing parameter) is answered 400 ``NotRecorded`` and kept in ``refused``.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from remediate.emulator import Emulator
from remediate.emulator.wire import Response

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "recordings"


@dataclass(frozen=True)
class Interaction:
    """One recorded request and its response."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]   # sorted, without api-version
    status: int
    body: bytes
    source: str


def _split(uri_or_path: str) -> tuple[str, tuple[tuple[str, str], ...], str | None]:
    split = urllib.parse.urlsplit(uri_or_path)
    pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
    version = next((v for k, v in pairs if k.lower() == "api-version"), None)
    query = tuple(sorted((k, v) for k, v in pairs if k.lower() != "api-version"))
    return urllib.parse.unquote(split.path), query, version


def recorded(name: str) -> Interaction:
    """The one interaction of a vcrpy YAML recording."""
    data = yaml.safe_load((RECORDINGS / name).read_text())
    item = data[0] if isinstance(data, list) else data["interactions"][0]
    path, query, _ = _split(item["request"]["uri"])
    return Interaction(item["request"]["method"].upper(), path, query, int(item["response"]["status"]["code"]),
                       item["response"]["body"]["string"].encode(), name)


def spec_example(name: str, method: str, path: str, status: int = 200, **query: str) -> Interaction:
    """A REST-spec example's response for ``method path`` (the example has parameters, not a URL)."""
    data = json.loads((RECORDINGS / name).read_text())
    body = data["responses"][str(status)]["body"]
    return Interaction(method.upper(), path, tuple(sorted(query.items())), status, json.dumps(body).encode(), name)


def raw_body(i: Interaction) -> Any:
    """The recorded response body, decoded."""
    return json.loads(i.body)


class ReplayServer(Emulator):
    """Serves ``interactions`` only (TLS, CA and transports as the emulator's); refuses everything else."""

    def __init__(self, *interactions: Interaction) -> None:
        super().__init__({})
        self.interactions = list(interactions)
        self.served: list[tuple[str, str | None]] = []    # (source, api-version the client sent)
        self.refused: list[str] = []

    def _dispatch(self, method: str, target: str, raw: bytes) -> Response:
        path, query, version = _split(target)
        for i in self.interactions:
            if i.method == method and i.path == path and i.query == query:
                self.served.append((i.source, version))
                return Response(i.status, i.body)
        self.refused.append(f"{method} {path} {dict(query)}")
        return Response(400, {"error": {"code": "NotRecorded", "message": f"no recorded interaction for {method} "
                                        f"{path} with {dict(query)}"}})
