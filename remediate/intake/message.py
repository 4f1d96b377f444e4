"""Key Vault's own error text, wherever it appears: what it names (caller, vault, object, permission, operation,
address), the status its wording implies, and the signals it carries.

Every pattern is bounded and the message is cut to ``limits.MAX_MESSAGE_CHARS`` before any runs over it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from .. import catalog
from ..model import ObjectRef, Principal, Signal, VaultRef
from . import limits
from .claims import principal_from_caller
from .values import ip_address, vault_from_resource_id, vault_name

# --- message text (Key Vault's error text, wherever it appears) ----------------------------------------------

# Every quantifier is bounded and no '\s*' can run across lines (the message is also cut to MAX_MESSAGE_CHARS first).
_MSG = re.compile(
    r"Caller:[ \t]{0,8}(?P<caller>[^\r\n\\]{0,512}?appid=[^\r\n\s\\]{0,1024})"
    r"|The user, group or application '(?P<ugoa>[^'\r\n]{0,1024})'"
    r"|Action:[ \t]{0,8}'?(?P<action>Microsoft\.KeyVault/[A-Za-z/]{1,128})"
    r"|Resource:[ \t]{0,8}'(?P<resource>[^'\r\n]{0,1024})'"
    r"|Vault:[ \t]{0,8}(?P<vault>[^;\s\\\"']{1,64});location="
    r"|key vault '(?P<kv>[^';\r\n]{1,64})(?:;location=[^'\r\n]{0,64})?'"
    r"|does not have (?P<pkind>keys|secrets|certificates|storage) (?P<perm>[A-Za-z]{1,40}) permission"
    r"|Operation:[ \t]{0,8}\\?\"(?P<opq>[A-Za-z]{1,80})\\?\""
    r"|Operation (?P<opnp>[A-Za-z]{1,80}) is not (?:permitted|allowed)"
    r"|Client address(?::[ \t]{0,8}| \()(?P<ip>[0-9A-Fa-f.:]{2,45})"
    r"|on a disabled (?P<dkind>secret|key|certificate)")

_NETWORK = re.compile(r"ForbiddenByFirewall|ForbiddenByConnection|network security perimeter|\bNSP\b|"
                      r"Client address[^\r\n]{0,40}is not authorized|Public network access is disabled",
                      re.IGNORECASE)
_FIRST_PARTY = re.compile(r"Access denied to first party service", re.IGNORECASE)
_KEY_OP = re.compile(r"KeyOperationForbidden|is not permitted on this key", re.IGNORECASE)
_DISABLED = re.compile(r"SecretDisabled|KeyDisabled|CertificateDisabled|not allowed on a disabled", re.IGNORECASE)
_OBO = re.compile(r"on[- ]behalf[- ]of|compound identit|\bOBO\b", re.IGNORECASE)
_CHALLENGE = re.compile(r"AKV10000|missing a Bearer|Request is missing a Bearer", re.IGNORECASE)
_IMPLIED_403 = re.compile(r"Caller is not authorized to perform action|"
                          r"does not have \w{1,40} \w{1,40} permission on key vault|"
                          r"Client address[^\r\n]{0,40}is not authorized|is not permitted on this key|"
                          r"Access denied to first party service|not allowed on a disabled", re.IGNORECASE)
_AKV401 = re.compile(r"\bAKV100\d\d\b")
_THROTTLED = re.compile(r"\bThrottled\b")


@dataclass(frozen=True)
class MessageFacts:
    """What Key Vault's error text names: caller, action, resource, vault, permission, operation, address."""

    principal: Principal = field(default_factory=Principal)
    action: str | None = None
    vault: VaultRef = field(default_factory=VaultRef)
    object: ObjectRef | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    caller_ip: str | None = None


_NO_FACTS = MessageFacts()


def message_facts(message: str | None) -> MessageFacts:
    """Scan one message once; the first occurrence of each field wins (tools often print it twice)."""
    if not message:
        return _NO_FACTS
    return _message_facts(message[:limits.MAX_MESSAGE_CHARS])


@lru_cache(maxsize=2048)
def _message_facts(message: str) -> MessageFacts:
    principal, vault = Principal(), VaultRef()
    action: str | None = None
    obj: ObjectRef | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    caller_ip: str | None = None
    if "\\n" in message:
        message = message.replace("\\r\\n", "\n").replace("\\n", "\n")
    for m in _MSG.finditer(message):
        g = m.lastgroup
        if g == "perm":
            g = "pkind"
        if g == "caller" and not principal.known:
            principal = principal_from_caller(m.group("caller").strip().strip("'\""))
        elif g == "ugoa" and not principal.known:
            principal = principal_from_caller(m.group("ugoa"))
        elif g == "action" and action is None:
            action = catalog.canonical_action(m.group("action"))
        elif g == "resource" and obj is None:
            vref, obj = vault_from_resource_id(m.group("resource"))
            if vref.name and not vault.name:
                vault = vref
            elif vref.resource_id and not vault.resource_id:
                vault = VaultRef(name=vault.name, resource_id=vref.resource_id)
        elif g in ("vault", "kv"):
            name = vault_name(m.group(g))
            if name and not vault.name:
                vault = VaultRef(name=name, resource_id=vault.resource_id)
        elif g == "pkind" and permission is None:
            permission = (m.group("pkind"), m.group("perm"))
        elif g in ("opq", "opnp") and operation_word is None:
            operation_word = m.group(g)
        elif g == "ip" and caller_ip is None:
            caller_ip = ip_address(m.group("ip"))
        elif g == "dkind" and obj is None:
            obj = ObjectRef(kind=m.group("dkind") + "s")
    return MessageFacts(principal, action, vault, obj, permission, operation_word, caller_ip)


def implied_status(message: str | None) -> int | None:
    """A status the service's own wording implies (403 texts; AKV100xx are 401), for inputs that carry none."""
    if not message:
        return None
    message = message[:limits.MAX_MESSAGE_CHARS]
    if _IMPLIED_403.search(message):
        return 403
    if _AKV401.search(message):
        return 401
    return None


# --- signals: what the service's words say about the denial (decide.cause_hint maps them to a cause) ---------

_TEXT_SIGNALS = ((Signal.THROTTLED, _THROTTLED), (Signal.AUTH_CHALLENGE, _CHALLENGE), (Signal.NETWORK, _NETWORK),
                 (Signal.FIRST_PARTY, _FIRST_PARTY), (Signal.KEY_OPERATION, _KEY_OP), (Signal.DISABLED, _DISABLED),
                 (Signal.ON_BEHALF_OF, _OBO))


def text_signals(texts: Iterable[str | None]) -> frozenset[Signal]:
    """The signals Key Vault's own words carry in any of ``texts`` (message, error code, inner code)."""
    return _text_signals("\n".join(t[:limits.MAX_MESSAGE_CHARS] for t in texts if t))


def _folded(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """An IGNORECASE pattern for ASCII text already lower-cased: its letters lower-cased (escapes such as ``\\b``
    kept), matched case-sensitively. On ASCII text it finds exactly what the pattern finds, several times faster."""
    if not pattern.flags & re.IGNORECASE:
        return pattern
    return re.compile(re.sub(r"(\\.)|([A-Z]+)", lambda m: m.group(1) or m.group(2).lower(), pattern.pattern))


_FOLDED_SIGNALS = tuple((signal, _folded(pattern), bool(pattern.flags & re.IGNORECASE))
                        for signal, pattern in _TEXT_SIGNALS)


@lru_cache(maxsize=2048)
def _text_signals(blob: str) -> frozenset[Signal]:
    if blob.isascii():  # nearly every real text: one lower-cased copy, case-sensitive searches
        lower = blob.lower()
        return frozenset(signal for signal, pattern, folded in _FOLDED_SIGNALS
                         if pattern.search(lower if folded else blob))
    return frozenset(signal for signal, pattern in _TEXT_SIGNALS if pattern.search(blob))
