"""Notifications: a finding's summary POSTed to a Teams or Slack incoming webhook (``KV_REMEDIATE_NOTIFY_URL``).

Best effort by design: a failed notification is logged (never the URL, which is a secret) and never fails the
invocation that sent it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .settings import NOTIFY_SETTING

log = logging.getLogger("kv_remediate.app")


def post(url: str | None, payload: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST ``payload`` as JSON to ``url``; False (logged, not raised) when there is no URL or the call fails."""
    if not url:
        return False
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return True
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("kv-remediate: the notification to %s failed (%s)", NOTIFY_SETTING, type(exc).__name__)
        return False
