"""The function app's settings: the names it reads, host.json's queue/HTTP limits, and ``Settings`` (read and
checked once per process; problems are collected for /api/health, never raised).

Module-level imports are the standard library (and small project modules) only: the blueprints import this
module's constants at cold start.

Settings (app settings / environment):

- ``AzureWebJobsStorage`` (or ``AzureWebJobsStorage__accountName`` / ``__queueServiceUri`` / ``__tableServiceUri``
  / ``__clientId`` for the identity-based connection): the queue ``denials`` and the tables ``claims``/``findings``.
- ``KV_REMEDIATE_SNAPSHOT``: a snapshot file served by the bundled emulator instead of Azure (local and tests only).
- ``AZURE_SUBSCRIPTION_IDS``: optional: the subscriptions vaults are looked for in (a filter for Azure Resource Graph,
  and the list its ARM fallback searches); unset, every subscription the identity can read.
- ``KV_REMEDIATE_DEDUPE_WINDOW``: ISO 8601 duration (default ``PT10M``) in which identical denials are one finding.
- ``KV_REMEDIATE_NOTIFY_URL``: Teams Workflows, Slack or generic webhook URL (https; http only to loopback).
- ``KV_REMEDIATE_NOTIFY_KIND``: ``teams`` | ``slack`` | ``webhook``: the payload sent there (unset: read from the
  URL's host; notify.py).
- ``KV_REMEDIATE_SLACK_SIGNING_SECRET``: the Slack app's signing secret: ``/api/slack/actions`` checks every
  request's signature with it (unset: every request is refused).
- ``KV_REMEDIATE_SLACK_APPROVERS``: ``SLACKUSERID=ENTRA-OBJECT-ID,...``: the Slack users whose Approve / Reject
  clicks count, each as that Entra ID approver (unmapped users are refused).
- ``KV_REMEDIATE_SLACK_TEAM``: optional Slack team id: clicks from other workspaces are refused.
- ``KV_REMEDIATE_WEBHOOK_AUDIENCE`` + ``KV_REMEDIATE_WEBHOOK_TENANT``: require an Entra ID token on ``/api/alerts``.
- ``KV_REMEDIATE_API_AUDIENCE`` + ``KV_REMEDIATE_API_TENANT``: the token (app role ``KvRemediate.Apply``) that
  ``/api/remediate`` needs to apply; without them nothing is applied over HTTP.
- ``KV_REMEDIATE_SELF_OBJECT_ID``: the app's own principal object id(s), comma-separated: never a grantee.
- ``KV_REMEDIATE_POLICY``: the remediation policy (content or a path).
- ``KV_REMEDIATE_PUBLIC_URL``: the app's public base URL, for the findings-page links in approval notifications
  (default ``https://$WEBSITE_HOSTNAME``).
- ``KV_REMEDIATE_AUDIT_WORKSPACES``: comma-separated Log Analytics workspace ids (GUIDs) holding the vaults' audit
  logs: the only workspaces the app reads (alert rows, and the evidence ``mode: apply`` needs).
"""


from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clouds import CLOUD_SETTING, PUBLIC, Cloud, cloud_from_env
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..guard import Policy

STORAGE_CONNECTION = "AzureWebJobsStorage"
DENIALS_QUEUE = "denials"
POISON_QUEUE = "denials-poison"
CLAIMS_TABLE = "claims"
FINDINGS_TABLE = "findings"
GRANTS_TABLE = "grants"
APPROVALS_TABLE = "approvals"
VAULT_INDEX_TABLE = "vaultindex"

SNAPSHOT_SETTING = "KV_REMEDIATE_SNAPSHOT"
WINDOW_SETTING = "KV_REMEDIATE_DEDUPE_WINDOW"
NOTIFY_SETTING = "KV_REMEDIATE_NOTIFY_URL"
POLICY_SETTING = "KV_REMEDIATE_POLICY"
SUBSCRIPTIONS_SETTING = "AZURE_SUBSCRIPTION_IDS"
AUDIT_WORKSPACES_SETTING = "KV_REMEDIATE_AUDIT_WORKSPACES"
SELF_SETTING = "KV_REMEDIATE_SELF_OBJECT_ID"
PUBLIC_URL_SETTING = "KV_REMEDIATE_PUBLIC_URL"
"""The app's public base URL (``https://NAME.azurewebsites.net``) for the links in approval notifications; unset,
``https://$WEBSITE_HOSTNAME`` (set by the host in Azure)."""
AZURE_HOST_SETTINGS = ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME")
"""Set by the Functions/App Service host in Azure (never locally): the app runs against a real tenant."""
DEFAULT_WINDOW = timedelta(minutes=10)
DEFAULT_MAX_DEQUEUE = 5
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"

@dataclass(frozen=True)
class Problem:
    """A configuration problem for /api/health: the setting and what is wrong, never its value."""

    setting: str
    problem: str


def host_settings(path: Path = HOST_JSON) -> dict[str, Any]:
    """The parts of host.json the app mirrors: queue retry limits and the HTTP route prefix."""
    try:
        host = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        host = {}
    ext = _section(host, "extensions")
    queues, http = _section(ext, "queues"), _section(ext, "http")
    return {"max_dequeue_count": int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE)),
            "batch_size": int(queues.get("batchSize", 16)),
            "new_batch_threshold": int(queues.get("newBatchThreshold", 8)),
            "visibility_timeout": _hms(str(queues.get("visibilityTimeout", "00:00:00"))),
            "route_prefix": str(http.get("routePrefix", "api")).strip("/")}


def _section(value: Any, key: str) -> dict[str, Any]:
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def _hms(text: str) -> float:
    """``hh:mm:ss`` (a .NET TimeSpan as host.json writes it) in seconds; 0 when unreadable."""
    try:
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return 0.0


def _is_loopback(host: str | None) -> bool:
    return (host or "").lower() in ("127.0.0.1", "localhost", "::1")


def snapshot_in_azure(env: Mapping[str, str]) -> str | None:
    """Why the settings must not run (``KV_REMEDIATE_SNAPSHOT`` on an Azure host), or None."""
    hosts = [k for k in AZURE_HOST_SETTINGS if (env.get(k) or "").strip()]
    if (env.get(SNAPSHOT_SETTING) or "").strip() and hosts:
        return (f"is set on an Azure host ({', '.join(hosts)} present): the app would read a snapshot instead of "
                "the tenant, so it refuses to start; remove the setting")
    return None


@dataclass(frozen=True)
class Settings:
    """The app settings that shape a run, read once per process."""

    snapshot: str | None = None
    subscriptions: tuple[str, ...] = ()
    dedupe_window: timedelta = DEFAULT_WINDOW
    notify_url: str | None = None
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE
    cloud: Cloud | None = PUBLIC        # None: the cloud settings are unusable (health names them)
    self_object_ids: frozenset[str] = frozenset()
    max_denials: int = 100              # KV_REMEDIATE_MAX_DENIALS: denials one alert or request body may yield
    max_principals: int = 50            # KV_REMEDIATE_MAX_PRINCIPALS: distinct principals per batch
    """The app's own principal object ids (lower-case, KV_REMEDIATE_SELF_OBJECT_ID): the guard never grants them."""
    audit_workspaces: tuple[str, ...] = ()
    """KV_REMEDIATE_AUDIT_WORKSPACES: the only Log Analytics workspaces the app reads (lower-case GUIDs)."""
    problems: tuple[Problem, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read (and check) the settings; problems are collected, not raised, so health can list them all. The
        typed values are ``setting_values.SettingValues``; the rest is checked here and by each setting's owner."""
        from . import setting_values

        env = dict(os.environ if env is None else env)
        problems: list[Problem] = []
        snapshot = (env.get(SNAPSHOT_SETTING) or "").strip() or None
        if snapshot and not Path(snapshot).is_file():
            problems.append(Problem(SNAPSHOT_SETTING, "names a file that does not exist"))
        in_azure = snapshot_in_azure(env)
        if in_azure:
            problems.append(Problem(SNAPSHOT_SETTING, in_azure))
        values, typed = setting_values.read(env)
        problems.extend(Problem(setting, problem) for setting, problem in typed)
        if not values.self_object_ids and SELF_SETTING not in dict(typed) and \
                any((env.get(k) or "").strip() for k in AZURE_HOST_SETTINGS):
            problems.append(Problem(SELF_SETTING, "is not set on an Azure host: the guard cannot recognise the app's "
                                    "own identity as a grantee; set it to the managed identity's principal (object) "
                                    "id"))
        notify = (env.get(NOTIFY_SETTING) or "").strip() or None
        if notify:
            url = urllib.parse.urlsplit(notify)
            if not (url.scheme == "https" or (url.scheme == "http" and _is_loopback(url.hostname))):
                problems.append(Problem(NOTIFY_SETTING, "must be an https URL (http only to loopback); "
                                        "notifications are off"))
                notify = None
        cloud: Cloud | None = None
        try:
            cloud = cloud_from_env(env)
        except ConfigError as exc:
            problems.append(Problem(exc.setting or CLOUD_SETTING, exc.message.split(": ", 1)[-1] +
                                    "; Azure is not called until it is fixed"))
        problems.extend(_storage_problems(env))
        problems.extend(_webhook_problems(env))
        problems.extend(_policy_problems(env))
        problems.extend(_channel_problems(env))
        return cls(snapshot=snapshot, subscriptions=values.subscriptions, dedupe_window=values.dedupe_window,
                   notify_url=notify, cloud=cloud, max_dequeue_count=host_settings()["max_dequeue_count"],
                   self_object_ids=frozenset(values.self_object_ids), max_denials=values.max_denials,
                   max_principals=values.max_principals, audit_workspaces=values.audit_workspaces,
                   problems=tuple(problems), env=env)

    @property
    def caps(self) -> dict[str, int]:
        """Intake's caps as ``parse_one``/``parse_inputs`` keywords."""
        return {"max_denials": self.max_denials, "max_principals": self.max_principals}


def _storage_problems(env: Mapping[str, str]) -> list[Problem]:
    from ..errors import ConfigError
    from ..store.azure import storage_settings

    try:
        storage_settings(env, prefix=STORAGE_CONNECTION)
    except ConfigError as exc:
        return [Problem(STORAGE_CONNECTION, exc.message)]
    return []


def _webhook_problems(env: Mapping[str, str]) -> list[Problem]:
    from .webhook_auth import (
        API_AUDIENCE_SETTING,
        API_TENANT_SETTING,
        AUDIENCE_SETTING,
        TENANT_SETTING,
        tenant_problem,
    )

    out = []
    for aud_s, ten_s, effect in ((AUDIENCE_SETTING, TENANT_SETTING, "/api/alerts refuses every alert"),
                                 (API_AUDIENCE_SETTING, API_TENANT_SETTING, "/api/remediate refuses to apply")):
        audience, tenant = ((env.get(s) or "").strip() for s in (aud_s, ten_s))
        if bool(audience) != bool(tenant):
            missing = ten_s if audience else aud_s
            out.append(Problem(missing, f"is not set while {aud_s if audience else ten_s} is: the token check is "
                               f"half-configured and {effect}; set both or neither"))
        elif tenant and (problem := tenant_problem(tenant)):
            out.append(Problem(ten_s, (problem if problem.startswith("is ") else
                                       "is a domain, not a tenant id (a GUID): token issuers name the tenant by "
                                       "id, so every token would be refused") + f"; {effect}"))
    return out


def _channel_problems(env: Mapping[str, str]) -> list[Problem]:
    """The notification kind and the Slack interactivity settings (names only, never values)."""
    from .notify import KIND_SETTING, kind_problem
    from .slack_auth import APPROVERS_SETTING, SIGNING_SECRET_SETTING, TEAM_SETTING, approvers, team_problem

    out = []
    if problem := kind_problem(env.get(KIND_SETTING)):
        out.append(Problem(KIND_SETTING, problem))
    try:
        mapped = approvers(env.get(APPROVERS_SETTING))
    except ValueError as exc:
        out.append(Problem(APPROVERS_SETTING, f"{exc}; every Slack click is refused until it is fixed"))
        mapped = {}
    if problem := team_problem(env.get(TEAM_SETTING)):
        out.append(Problem(TEAM_SETTING, problem + "; every Slack click is refused until it is fixed"))
    if mapped and not (env.get(SIGNING_SECRET_SETTING) or "").strip():
        out.append(Problem(SIGNING_SECRET_SETTING, f"is not set while {APPROVERS_SETTING} is: /api/slack/actions "
                           "refuses every click; set the Slack app's signing secret"))
    return out


def _policy_problems(env: Mapping[str, str]) -> list[Problem]:
    from ..errors import RemediateError

    try:
        load_policy(env)
    except RemediateError as exc:
        return [Problem(POLICY_SETTING, exc.message)]
    return []


def load_policy(env: Mapping[str, str] | None = None) -> Policy:
    """The remediation policy from ``KV_REMEDIATE_POLICY`` (content or a file path), else the defaults."""
    from ..guard import load_policy as load

    return load(None, os.environ if env is None else env)
