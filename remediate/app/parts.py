"""The parts a local host runs beside the app's HTTP functions (``kv-remediate serve``'s queue-worker and extra
HTTP processes), as its supervisor last wrote them, for /api/health.

The channel is a small JSON file in serve's private temporary directory, named by ``KV_REMEDIATE_SERVE_STATE`` in
the environment serve gives its own processes; the supervisor replaces it atomically on every change, health reads
it on each request (no network, no lock). Without the setting (on Azure, where the Functions host keeps its
workers itself) there are no parts to report."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_SETTING = "KV_REMEDIATE_SERVE_STATE"
RUNNING = "running"


@dataclass(frozen=True)
class PartState:
    """One process of a part: ``state`` is ``running``, ``restarting`` or ``failed``; ``detail`` says why."""

    part: str
    instance: int
    state: str
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == RUNNING


def write_parts(path: Path, parts: Sequence[PartState]) -> None:
    """Replace the state file atomically (a reader sees the old or the new one, never half of one)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"parts": [asdict(p) for p in parts]}), encoding="utf-8")
    os.replace(tmp, path)


def read_parts(env: Mapping[str, str]) -> list[PartState]:
    """The parts named in the state file of ``env``; none without the setting, one ``failed`` entry when the
    file cannot be read (the supervisor is gone, or wrote something else)."""
    path = (env.get(STATE_SETTING) or "").strip()
    if not path:
        return []
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return [PartState(str(p["part"]), int(p["instance"]), str(p["state"]), str(p.get("detail") or ""))
                for p in doc["parts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [PartState("supervisor", 1, "failed", f"serve's state file is unreadable ({type(exc).__name__}); "
                                                     "the supervisor may have stopped")]
