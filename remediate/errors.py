"""Every domain error. Each message says what was tried, on what, why it failed and what to do next."""

from __future__ import annotations


class RemediateError(Exception):
    """Base of all kv-remediate errors; ``code`` is a stable UPPER_SNAKE identifier."""

    code = "ERROR"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(RemediateError):
    """Unusable input: names the input and what is wrong (CLI exit 2, HTTP 400)."""

    code = "BAD_INPUT"
    exit_code = 2

    def __init__(self, source: str, problem: str, code: str = "BAD_INPUT") -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem
        self.code = code


class PolicyError(RemediateError):
    """An invalid policy file: names the key and the problem (CLI exit 2, app refuses to start)."""

    code = "BAD_POLICY"
    exit_code = 2


class AzureUnavailableError(RemediateError):
    """Azure (or the emulator) could not be reached or refused our own identity (CLI exit 3)."""

    code = "AZURE_UNAVAILABLE"
    exit_code = 3


class HsmAccessDeniedError(AzureUnavailableError):
    """A Managed HSM refused our own identity a local RBAC data action (403 ``AccessDenied``, or a firewall).

    ``data_action`` and ``scope`` are what the HSM's text named ("Not authorized to access {action} on {scope}"),
    when it named them; the message carries the remedy (which local role, at which scope)."""

    code = "HSM_ACCESS_DENIED"

    def __init__(self, message: str, hsm: str, data_action: str | None = None, scope: str | None = None) -> None:
        super().__init__(message)
        self.hsm = hsm
        self.data_action = data_action
        self.scope = scope


class ConfigError(RemediateError):
    """A missing or unusable app setting: names the setting and what to set (CLI exit 2, health reports it)."""

    code = "BAD_CONFIG"
    exit_code = 2

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting        # the setting at fault, when one is (health lists it without its value)


class StorageError(AzureUnavailableError):
    """Azure Storage (tables, queues; or Azurite) failed: says what was tried on which table/queue and what to do."""

    code = "STORAGE_UNAVAILABLE"


class WebhookAuthError(RemediateError):
    """A secure-webhook bearer token is missing or invalid (HTTP 401); ``reason`` is a short stable word."""

    code = "UNAUTHORIZED"
    status = 401

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SlackRequestError(RemediateError):
    """A Slack interactivity request refused before anything is read or decided: a missing or bad signature, a
    stale timestamp (HTTP 401), or a payload that is not a button click we sent (HTTP 400). ``reason`` is a short
    stable word for the log and the decision record."""

    code = "SLACK_REFUSED"

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class ApplyError(RemediateError):
    """A change could not be made or verified: says what was tried, on what, why, and what to do next."""

    code = "APPLY_FAILED"
    exit_code = 1


class TooLargeError(InputError):
    """An input over one of intake's caps (denials per input, distinct principals per batch, records, blocks).

    Raised before any denial is returned (nothing half-done); the app answers HTTP 413, the CLI exits 2.
    ``what`` names the counted thing, ``count`` how many were seen (at least), ``cap`` the limit.
    """

    code = "TOO_LARGE"
    status = 413

    def __init__(self, source: str, what: str, count: int, cap: int, remedy: str) -> None:
        super().__init__(source, f"more than {cap} {what} ({count} seen, the cap is {cap}); {remedy}", "TOO_LARGE")
        self.what = what
        self.count = count
        self.cap = cap


class UnsupportedMediaTypeError(InputError):
    """A request body in a media type or charset the app does not read (HTTP 415): names what to send instead."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(source, problem, "UNSUPPORTED_MEDIA_TYPE")


class ServeError(RemediateError):
    """``kv-remediate serve`` could not start or keep one of its parts running (the embedded Azurite, a queue
    worker): names the part and what to look at (CLI exit 1)."""

    code = "SERVE_FAILED"
    exit_code = 1


def clip(text: str, limit: int = 300) -> str:
    """The first line of ``text``, at most ``limit`` characters, never cut mid-word: a longer line ends at the last
    word boundary that fits, marked with an ellipsis (a word longer than the whole limit is cut, marked the same)."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-(") + "…"
