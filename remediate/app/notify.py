"""Notifications: a finding's summary POSTed to a Teams or Slack incoming webhook (``KV_REMEDIATE_NOTIFY_URL``).

Best effort by design: a failed notification is logged (never the URL, which is a secret) and never fails the
invocation that sent it. Sent with aiohttp, the worker's own HTTP client, on its event loop.
"""

from __future__ import annotations

import logging
from typing import Any

from .settings import NOTIFY_SETTING

log = logging.getLogger("kv_remediate.app")


async def post(url: str | None, payload: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST ``payload`` as JSON to ``url``; False (logged, not raised) when there is no URL or the call fails
    (connection, timeout, or a status of 400 or more). Proxy settings of the environment apply, as for any
    outbound call to the internet."""
    if not url:
        return False
    import aiohttp

    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=True) as session,
                    session.post(url, json=payload, raise_for_status=True) as response):
            await response.read()
        return True
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        log.warning("kv-remediate: the notification to %s failed (%s)", NOTIFY_SETTING, type(exc).__name__)
        return False
