"""Assembling one denial: a ``Draft`` filled from the places of one input, validated into a ``Denial`` by
``build``; an ``Outcome`` is what one input (or one block of it) yielded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import catalog
from ..model import Denial, ObjectRef, ParseResult, Principal, RowsLink, Signal, VaultRef
from . import limits
from .claims import merge_principal
from .message import message_facts, text_signals
from .operations import resolve_operation
from .values import HsmArmPath, guid, hsm_arm_path, identifier, object_from_path, vault_uri

HSM_ACTION_PREFIX = "Microsoft.KeyVault/managedHsm/"
# A Managed HSM's data-plane URL in an error text (any cloud's suffix: clouds.py); its name follows the vault rule.
_HSM_URL = re.compile(r"https://[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]\.managedhsm\.(?:azure\.net|azure\.cn|"
                      r"usgovcloudapi\.net)/[^\s'\"<>]{0,512}")
_MAX_CODE = 128  # longest error code accepted as a code (the bound of _CODE)

# --- assembling one denial -----------------------------------------------------------------------------------


def _code(value: Any) -> str | None:
    """An error code (``Forbidden``, ``ForbiddenByRbac``): a short word, or None."""
    v = identifier(value)
    return v if v is not None and len(v) <= _MAX_CODE and _CODE.fullmatch(v) else None


_CODE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass
class Draft:
    """A denial being assembled from several places of one input; ``build`` validates and fills the rest."""

    source: str
    status: int | None = None
    error_code: str | None = None
    inner_code: str | None = None
    principal: Principal = field(default_factory=Principal)
    vault: VaultRef = field(default_factory=VaultRef)
    operation: str | None = None
    action: str | None = None
    permission: tuple[str, str] | None = None
    operation_word: str | None = None
    object: ObjectRef | None = None
    path: str | None = None
    method: str | None = None
    caller_ip: str | None = None
    time: str | None = None
    correlation_id: str | None = None
    message: str | None = None
    alert_id: str | None = None
    address_authorized: bool | None = None
    status_only: bool = False
    relayed: bool = False
    hsm_scope: str | None = None
    method_kind: str | None = None  # the object kind an SDK method or cmdlet names (GetCertificate: certificates)
    arm: HsmArmPath | None = None   # a Managed HSM key reached through ARM (values.hsm_arm_path)

    def named_by_method(self, operation: str | None) -> None:
        """The operation an SDK method or cmdlet names (``BaseClient#GetSecret``), and so its object kind."""
        op = catalog.operation(operation) if operation else None
        if op is None or self.operation is not None:
            return
        self.operation = op.name
        if op.object_kind in catalog.OBJECT_KINDS:
            self.method_kind = op.object_kind

    def add_vault(self, vref: VaultRef) -> None:
        """Merge another mention of the vault (first name and first valid resource id win)."""
        hsm = "managed_hsm" in (self.vault.kind, vref.kind)
        self.vault = VaultRef(name=self.vault.name or vref.name, resource_id=self.vault.resource_id or vref.resource_id,
                              kind="managed_hsm" if hsm else "vault")

    def add_uri(self, value: Any) -> None:
        """Vault, path and object from a data-plane request URI or object id."""
        u = vault_uri(value)
        if u is None:
            return
        if u.vault:
            self.add_vault(VaultRef(name=u.vault, kind="managed_hsm" if u.hsm else "vault"))
        if self.path is None and u.path not in ("", "/"):
            self.path = u.path
        if self.object is None:
            self.object = object_from_path(u.path)

    def add_arm(self, value: Any) -> None:
        """An ARM path to a Managed HSM key that ``value`` names (first mention of each part wins)."""
        found = hsm_arm_path(value)
        if found is None:
            return
        if self.arm is None:
            self.arm = found
            return
        a = self.arm
        self.arm = HsmArmPath(a.hsm if a.hsm.name else found.hsm, a.key or found.key, a.action or found.action)

    def _arm_applied(self, vault: VaultRef, data_action: str | None) -> tuple[VaultRef, str | None]:
        """The vault and data action of an ARM-path denial: a Managed HSM (the one the input names elsewhere first,
        else the ARM id's), its key's scope, and the data action ARM's operation stands for when none is named."""
        a = self.arm
        assert a is not None
        name = vault.name or a.hsm.name
        rid = vault.resource_id or (a.hsm.resource_id if not vault.name or (a.hsm.name or "").lower()
                                    == vault.name.lower() else None)
        scope = self.hsm_scope or (f"/keys/{a.key}" if a.key else None)
        return VaultRef(name=name, resource_id=rid, kind="managed_hsm", scope=scope), data_action or a.action

    def add_path(self, path: str) -> None:
        """A data-plane path without its host (a host masked by CI): the path and the object it names."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        if self.path is None and path not in ("", "/"):
            self.path = path
        found = object_from_path(path)
        if self.object is None or (found is not None and found.name and self.object.name is None
                                   and found.kind == self.object.kind):
            self.object = found

    def add_message(self, message: str | None) -> None:
        """Everything Key Vault's error text names, where the draft does not know it yet."""
        if not message:
            return
        if self.message is None:
            self.message = message
        f = message_facts(message)
        self.add_arm(message)
        if not self.vault.name and (host := _HSM_URL.search(message)):   # a Managed HSM's request URL
            self.add_uri(host.group(0))
        self.principal = merge_principal(self.principal, f.principal)
        self.add_vault(f.vault)
        if f.object is not None and (self.object is None or (self.object.name is None and f.object.name
                                                             and self.object.kind == f.object.kind)):
            self.object = f.object
        self.action = self.action or f.action
        self.named_by_method(f.operation)
        self.hsm_scope = self.hsm_scope or f.hsm_scope
        self.permission = self.permission or f.permission
        self.operation_word = self.operation_word or f.operation_word
        self.caller_ip = self.caller_ip or f.caller_ip

    def build(self) -> Denial:
        """The validated Denial; the vault name follows the resource id when both are known."""
        ops = resolve_operation(operation=self.operation, action=self.action, permission=self.permission,
                                word=self.operation_word, path=self.path, method=self.method,
                                kind=self.object.kind if self.object else None)
        obj = self.object
        if obj is None and self.method_kind and self.path is None:  # the caller's own code names the kind
            obj = ObjectRef(kind=self.method_kind)
        vault = self.vault
        if vault.resource_id and not vault.name:
            vault = VaultRef(name=vault.resource_id.rsplit("/", 1)[-1], resource_id=vault.resource_id, kind=vault.kind)
        data_action, permission = ops.data_action, ops.permission
        hsm_action = self.action if self.action and self.action.startswith(HSM_ACTION_PREFIX) else None
        if hsm_action or vault.kind == "managed_hsm":   # a Managed HSM: local RBAC only, no access policies
            vault = VaultRef(name=vault.name, resource_id=vault.resource_id, kind="managed_hsm", scope=self.hsm_scope)
            data_action, permission = hsm_action or data_action, None
        signals = text_signals((self.message, self.error_code, self.inner_code))
        if self.arm is not None:   # the ARM path to an HSM key: where to look (the setting is read, never taken)
            vault, data_action = self._arm_applied(vault, data_action)
            permission = None
            signals |= {Signal.HSM_ARM_PATH}
        if self.address_authorized is False:
            signals |= {Signal.ADDRESS_NOT_AUTHORIZED}
        if self.status_only:
            signals |= {Signal.STATUS_ONLY}
        if self.relayed:
            signals |= {Signal.RELAYED}
        message = self.message[:limits.MAX_MESSAGE_CHARS].strip() if self.message else None
        limits.count_denial(self.principal)
        return Denial(
            source=self.source, status=self.status, error_code=_code(self.error_code),
            inner_code=_code(self.inner_code), principal=self.principal, vault=vault, operation=ops.operation,
            data_action=data_action, access_policy_permission=permission, object=obj,
            caller_ip=self.caller_ip, time=identifier(self.time), correlation_id=guid(self.correlation_id),
            message=message or None, signals=signals, alert_id=identifier(self.alert_id))


@dataclass
class Outcome:
    """What one input (or one block of it) yielded; merged into a ParseResult by the package entry point.

    ``rows_links`` maps a denial's index in ``denials`` to where its alert's rows are (``rows_to_fetch``)."""

    denials: list[Denial] = field(default_factory=list)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    rows_links: dict[int, RowsLink] = field(default_factory=dict)

    def rows_to_fetch(self, link: RowsLink) -> None:
        """The last denial names no caller: its alert's rows are at ``link``; the link's note goes to a person."""
        self.rows_links[len(self.denials) - 1] = link
        if link.note:
            self.notes.append(link.note)

    def extend(self, other: Outcome) -> None:
        offset = len(self.denials)
        self.denials.extend(other.denials)
        self.skipped += other.skipped
        self.notes.extend(other.notes)
        self.rows_links.update((offset + i, link) for i, link in other.rows_links.items())

    def result(self) -> ParseResult:
        """The ParseResult of everything this outcome holds."""
        links = tuple(self.rows_links.get(i) for i in range(len(self.denials))) if self.rows_links else ()
        return ParseResult(denials=tuple(self.denials), skipped=self.skipped, notes=tuple(self.notes),
                           rows_links=links)
