"""Key Vault's own error text, wherever it appears: what it names (caller, vault, object, permission, operation,
address), the status its wording implies, and the signals it carries.

Every pattern is bounded and the message is cut to ``limits.MAX_MESSAGE_CHARS`` before any runs over it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from .. import catalog
from ..model import HSM_SCOPE, ObjectRef, Principal, Signal, VaultRef
from . import limits
from .claims import principal_from_caller
from .operations import canonical_operation
from .values import ip_address, object_name, vault_from_resource_id, vault_name

# --- message text (Key Vault's error text, wherever it appears) ----------------------------------------------

# Every quantifier is bounded and no '\s*' can run across lines (the message is also cut to MAX_MESSAGE_CHARS first).
_MSG = re.compile(
    r"Caller:[ \t]{0,8}(?P<caller>[^\r\n\\]{0,512}?appid=[^\r\n\s\\]{0,1024})"
    r"|The user, group or application '(?P<ugoa>[^'\r\n]{0,1024})'"
    r"|The policy requires the caller '(?P<obo>[^'\r\n]{0,1024})'"
    r"|Action:[ \t]{0,8}'?(?P<action>Microsoft\.KeyVault/[A-Za-z/]{1,128})"
    r"|perform action '(?P<paction>Microsoft\.KeyVault/[A-Za-z/]{1,128})'"
    r"|Resource:[ \t]{0,8}'(?P<resource>[^'\r\n]{0,1024})'"
    r"|on resource '(?P<oresource>[^'\r\n]{0,1024})'"
    r"|does not have access to '(?P<asresource>[^'\r\n]{0,1024})' Key Vault"
    r"|not authorized to read (?P<rkind>secrets|keys|certificates) from '(?P<rresource>[^'\r\n]{0,1024})'"
    r"|Vault:[ \t]{0,8}(?P<vault>[^;\s\\\"']{1,64});"
    r"|key vault '(?P<kv>[^';\r\n]{1,64})(?:;location=[^'\r\n]{0,64})?'"
    r"|from Azure Key Vault '(?P<akv>[^'\r\n]{1,64})'"
    r"|Key Vault Name[ \t]{0,8}: '(?P<pkv>[^'\r\n]{1,64})'"
    r"|does not have (?P<pkind>keys|secrets|certificates|storage) (?P<perm>[A-Za-z]{1,40}) permission"
    r"|Operation:[ \t]{0,8}\\?\"(?P<opq>[A-Za-z]{1,80})\\?\""
    r"|Operation (?P<dop>[A-Za-z]{1,40}) is not allowed on a disabled (?P<dkind2>secret|key|certificate)"
    r"|Operation (?P<opnp>[A-Za-z]{1,80}) is not (?:permitted|allowed)"
    r"|Client address(?::[ \t]{0,8}| \()(?P<ip>[0-9A-Fa-f.:]{2,45})"
    r"|on a disabled (?P<dkind>secret|key|certificate)"
    r"|Not authorized to access (?P<hsmaction>Microsoft\.KeyVault/managedHsm/[A-Za-z/]{1,128}) on "
    r"'?(?P<hsmscope>/[A-Za-z0-9/_.-]{0,256})"
    # where the object is named outside the service's own text: CSI driver, Terraform azurerm, External
    # Secrets, Packer, Az PowerShell (each only says where to look: names are validated like any other)
    r"|objectType:(?P<csikind>secret|key|cert)[a-z]{0,8}, objectName:(?P<csiname>[^,\s]{0,256})"
    r"|existing (?P<tfkind>Secret|Key|Certificate) \"(?P<tfname>[^\"\r\n]{0,256})\""
    r"|Azure KeyVault (?P<trkind>Secret|Key|Certificate) (?P<trname>[^:\s]{1,256}):"
    r"|key \\?\"(?P<esokind>secret|key|cert)/(?P<esoname>[^\"\\\s]{0,256})\\?\" from ExternalSecret"
    r"|Key Vault Secret Name[ \t]{0,8}: '(?P<pksec>[^'\r\n]{0,256})'"
    r"|\b(?P<psverb>Get|Set|Remove|Add|Import|Backup|Restore|Update)-AzKeyVault(?P<psnoun>Secret|Key|Certificate)\b"
    r"|-VaultName[ \t]{1,8}[\"']?(?P<psvault>[A-Za-z0-9-]{1,64})"
    r"|[ \t]-Name[ \t]{1,8}[\"']?(?P<psname>[A-Za-z0-9-]{1,127})[\"']?(?=[ \t]|$)")

_NETWORK = re.compile(r"ForbiddenByFirewall|ForbiddenByConnection|network security perimeter|\bNSP\b|"
                      r"Client address[^\r\n]{0,40}is not authorized|Public network access is disabled|"
                      r"not an approved private link",
                      re.IGNORECASE)
_FIRST_PARTY = re.compile(r"Access denied to first party service", re.IGNORECASE)
_KEY_OP = re.compile(r"KeyOperationForbidden|is not permitted on this key", re.IGNORECASE)
_DISABLED = re.compile(r"SecretDisabled|KeyDisabled|CertificateDisabled|not allowed on a disabled", re.IGNORECASE)
_OBO = re.compile(r"on[- ]behalf[- ]of|compound identit|\bOBO\b", re.IGNORECASE)
_CHALLENGE = re.compile(r"AKV10000|missing a Bearer|Request is missing a Bearer", re.IGNORECASE)
_IMPLIED_403 = re.compile(r"Caller is not authorized to perform action|"
                          r"does not have \w{1,40} \w{1,40} permission on key vault|"
                          r"Client address[^\r\n]{0,40}is not authorized|is not permitted on this key|"
                          r"Access denied to first party service|not allowed on a disabled|"
                          r"Caller was not found on any access policy|The policy requires the caller '|"
                          r"not an approved private link|Public network access is disabled and request|"
                          r"does not have access to '[^'\r\n]{0,1024}' Key Vault|"
                          r"Not authorized to access Microsoft\.KeyVault/managedHsm/|"
                          r"User is not authorized to read secrets|AccessToKeyVaultDenied", re.IGNORECASE)
_AKV401 = re.compile(r"\bAKV100\d\d\b")
_THROTTLED = re.compile(r"\bThrottled\b")


@dataclass(frozen=True)
class MessageFacts:
    """What Key Vault's error text names: caller, action, resource, vault, permission, operation, address (and the
    Managed HSM local scope of an HSM refusal)."""

    principal: Principal = field(default_factory=Principal)
    action: str | None = None
    vault: VaultRef = field(default_factory=VaultRef)
    object: ObjectRef | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    caller_ip: str | None = None
    operation: str | None = None
    hsm_scope: str | None = None


_NO_FACTS = MessageFacts()
_KINDS = {"secret": "secrets", "key": "keys", "cert": "certificates", "certificate": "certificates"}
# Az PowerShell cmdlet verbs as the diagnostic log's OperationName verbs (Remove-AzKeyVaultSecret: SecretDelete).
_PS_VERBS = {"Get": "Get", "Set": "Set", "Remove": "Delete", "Add": "Create", "Import": "Import", "Backup": "Backup",
             "Restore": "Restore", "Update": "Update"}
# The ` r n` a log scraper leaves of a "\r\n" (flexvolume events): a line break before the next field.
_RN_ARTEFACT = re.compile(r"(?: |\\ )r(?: |\\| \\)n(?=[A-Z])")
_HSM_ACTION = re.compile(r"Microsoft\.KeyVault/managedHsm/[A-Za-z]{1,40}(?:/[A-Za-z]{1,40}){0,3}")


def message_facts(message: str | None) -> MessageFacts:
    """Scan one message once; the first occurrence of each field wins (tools often print it twice)."""
    if not message:
        return _NO_FACTS
    return _message_facts(message[:limits.MAX_MESSAGE_CHARS])


def _named(kind: str, name: str) -> ObjectRef:
    """An object of ``kind`` named by text outside a URL: the name kept only when valid by Key Vault's rule."""
    return ObjectRef(kind=_KINDS.get(kind.lower(), kind.lower()), name=object_name(name))


def _better(current: ObjectRef | None, new: ObjectRef) -> ObjectRef:
    """The first object named wins; a later mention of the same kind fills a name the first did not have."""
    if current is None:
        return new
    if current.name is None and new.name is not None and current.kind == new.kind:
        return new
    return current


@dataclass
class _Scan:
    """What one message has named so far (first mention wins; a later one only fills what is unknown)."""

    principal: Principal = field(default_factory=Principal)
    action: str | None = None
    vault: VaultRef = field(default_factory=VaultRef)
    object: ObjectRef | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    caller_ip: str | None = None
    operation: str | None = None
    hsm_scope: str | None = None
    ps_kind: str | None = None

    def facts(self) -> MessageFacts:
        return MessageFacts(self.principal, self.action, self.vault, self.object, self.permission,
                            self.operation_word, self.caller_ip, self.operation, self.hsm_scope)

    def caller(self, m: re.Match[str], g: str) -> None:
        if not self.principal.known:
            raw = m.group(g)
            self.principal = principal_from_caller(raw.strip().strip("'\"") if g == "caller" else raw)

    def named_action(self, m: re.Match[str], g: str) -> None:
        if self.action is None:
            self.action = catalog.canonical_action(m.group(g))

    def resource(self, m: re.Match[str], g: str) -> None:
        vref, found = vault_from_resource_id(m.group(g))
        if vref.name and not self.vault.name:
            self.vault = VaultRef(name=vref.name, resource_id=self.vault.resource_id or vref.resource_id)
        elif vref.resource_id and not self.vault.resource_id:
            self.vault = VaultRef(name=self.vault.name, resource_id=vref.resource_id)
        if found is not None:
            self.object = _better(self.object, found)
        if g == "rresource" and self.action is None:  # "not authorized to read secrets from '...'": getSecret
            self.action = {"secrets": "Microsoft.KeyVault/vaults/secrets/getSecret/action"}.get(m.group("rkind"))

    def vault_named(self, m: re.Match[str], g: str) -> None:
        name = vault_name(m.group(g))
        if name and not self.vault.name:
            self.vault = VaultRef(name=name, resource_id=self.vault.resource_id)

    def permission_named(self, m: re.Match[str], _: str) -> None:
        if self.permission is None:
            self.permission = (m.group("pkind"), m.group("perm"))

    def word(self, m: re.Match[str], g: str) -> None:
        self.operation_word = self.operation_word or m.group(g)

    def address(self, m: re.Match[str], _: str) -> None:
        self.caller_ip = self.caller_ip or ip_address(m.group("ip"))

    def disabled(self, m: re.Match[str], _: str) -> None:
        self.object = _better(self.object, ObjectRef(kind=m.group("dkind") + "s"))

    def disabled_operation(self, m: re.Match[str], _: str) -> None:
        """"Operation get is not allowed on a disabled secret": SecretGet, on a secret."""
        kind, verb = m.group("dkind2"), m.group("dop")
        self.object = _better(self.object, ObjectRef(kind=kind + "s"))
        self.operation_word = self.operation_word or verb
        self.operation = self.operation or canonical_operation(kind.capitalize() + verb.capitalize())

    def hsm(self, m: re.Match[str], _: str) -> None:
        raw_action, raw_scope = m.group("hsmaction").rstrip("/"), m.group("hsmscope")
        if self.action is None and _HSM_ACTION.fullmatch(raw_action):
            self.action = raw_action
            self.hsm_scope = raw_scope if HSM_SCOPE.fullmatch(raw_scope) else None

    def object_named(self, m: re.Match[str], g: str) -> None:
        kind_group = _OBJECT_KIND_GROUP[g]
        kind = m.group(kind_group) if kind_group else "secret"
        self.object = _better(self.object, _named(kind, m.group(g)))

    def cmdlet(self, m: re.Match[str], _: str) -> None:
        self.ps_kind = m.group("psnoun")
        self.operation = self.operation or canonical_operation(self.ps_kind + _PS_VERBS[m.group("psverb")])

    def cmdlet_name(self, m: re.Match[str], _: str) -> None:
        if self.ps_kind is not None:
            self.object = _better(self.object, _named(self.ps_kind, m.group("psname")))


# The kind group beside each object-name group of _MSG (None: a Packer secret name).
_OBJECT_KIND_GROUP = {"csiname": "csikind", "tfname": "tfkind", "trname": "trkind", "esoname": "esokind",
                      "pksec": None}
# Which step reads each named group of _MSG (its last group: ``Match.lastgroup``).
_STEPS: dict[str, Callable[[_Scan, re.Match[str], str], None]] = {
    **dict.fromkeys(("caller", "ugoa", "obo"), _Scan.caller),
    **dict.fromkeys(("action", "paction"), _Scan.named_action),
    **dict.fromkeys(("resource", "oresource", "asresource", "rresource"), _Scan.resource),
    **dict.fromkeys(("vault", "kv", "akv", "pkv", "psvault"), _Scan.vault_named),
    **dict.fromkeys(("opq", "opnp"), _Scan.word),
    **dict.fromkeys(_OBJECT_KIND_GROUP, _Scan.object_named),
    "perm": _Scan.permission_named, "ip": _Scan.address, "dkind": _Scan.disabled,
    "dkind2": _Scan.disabled_operation, "hsmscope": _Scan.hsm, "psnoun": _Scan.cmdlet, "psname": _Scan.cmdlet_name,
}


@lru_cache(maxsize=2048)
def _message_facts(message: str) -> MessageFacts:
    if "\\n" in message:
        message = message.replace("\\r\\n", "\n").replace("\\n", "\n")
    if " r n" in message or "\\ r" in message:
        message = _RN_ARTEFACT.sub("\n", message)
    scan = _Scan()
    for m in _MSG.finditer(message):
        g = m.lastgroup
        step = _STEPS.get(g) if g else None
        if step is not None and g is not None:
            step(scan, m, g)
    return scan.facts()


def service_line(block: str) -> str | None:
    """The line of a text block that holds Key Vault's own refusal wording (for a block with no message line)."""
    m = _IMPLIED_403.search(block[:limits.MAX_MESSAGE_CHARS])
    if m is None:
        return None
    start = block.rfind("\n", 0, m.start()) + 1
    end = block.find("\n", m.end())
    return block[start:end if end >= 0 else len(block)].strip() or None


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
