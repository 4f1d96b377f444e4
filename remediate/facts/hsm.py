"""Reading and writing Azure Key Vault Managed HSM facts through the real async SDK clients: the HSM from ARM
(azure-mgmt-keyvault ``managed_hsms``) and its local RBAC from the HSM's own data plane (azure-keyvault-administration
``KeyVaultAccessControlClient``, aio). Live Azure and the bundled emulator differ only in the ARM base URL, the
credential and the transport (the emulator's resolves the HSM's real host name to loopback and trusts its CA).

Local RBAC is read at every scope that can grant a key: listing at ``/`` "does not show role assignments at
individual key level" (managed-hsm/role-management.md), so ``/``, ``/keys`` and ``/keys/{name}`` are listed in
parallel, with the role definitions at ``/`` (the only scope definitions live at), and deduplicated by id.

The write side (for apply): :func:`ensure_assignment` creates one assignment under our deterministic name
(:func:`remediate.hsm_model.assignment_name`), idempotently, and reads it back; :func:`remove_assignment` deletes only
an assignment of that name whose content is what we would have written (delete is idempotent). Every SDK exception
is translated here into a domain error (errors.py) that says what to do.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..catalog.hsm import HsmRoleDefinition, canonical_key_action, guid_of
from ..clouds import PUBLIC, Cloud
from ..errors import ApplyError, AzureUnavailableError, HsmAccessDeniedError
from ..hsm_model import (
    HsmAccess,
    HsmRoleAssignment,
    HsmSetting,
    HsmWrite,
    ManagedHsm,
    assignment_name,
    custom_role_name,
    normalise_scope,
    scopes_for,
)
from .pipeline import capped_retry_policy

T = TypeVar("T")
_HSM_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.KeyVault/managedHSMs/([^/]+)$", re.IGNORECASE)
_DENIED = re.compile(r"Not authorized to access (\S+) on '?([^'\s]+)'?", re.IGNORECASE)
AUDITOR = "Managed HSM Crypto Auditor"
"""The smallest built-in local role that reads both assignments and definitions (managed-hsm/built-in-roles.md)."""


def _s(v: Any) -> str | None:
    return None if v is None else str(getattr(v, "value", v))


def hsm_from_sdk(h: Any) -> ManagedHsm:
    """Our ManagedHsm from azure-mgmt-keyvault's ``ManagedHsm``."""
    p = h.properties
    acls = getattr(p, "network_acls", None)
    domain = getattr(p, "security_domain_properties", None)
    return ManagedHsm(
        id=str(h.id), name=str(h.name), hsm_uri=_s(p.hsm_uri), tenant_id=_s(p.tenant_id), location=_s(h.location),
        provisioning_state=_s(p.provisioning_state), status_message=_s(p.status_message),
        activation_status=_s(getattr(domain, "activation_status", None)),
        initial_admin_object_ids=tuple(str(x) for x in (p.initial_admin_object_ids or ())),
        public_network_access=_s(getattr(p, "public_network_access", None)),
        network_default_action=_s(acls.default_action) if acls else None,
        network_bypass=_s(acls.bypass) if acls else None,
        ip_rules=tuple(str(r.value) for r in (acls.ip_rules or [])) if acls else (),
        virtual_network_rules=len(acls.virtual_network_rules or []) if acls else 0,
        enable_purge_protection=p.enable_purge_protection)


def assignment_from_sdk(a: Any) -> HsmRoleAssignment:
    """Our HsmRoleAssignment from ``KeyVaultRoleAssignment``."""
    p = a.properties
    return HsmRoleAssignment(id=str(a.role_assignment_id), name=str(a.name), scope=str(_s(p.scope)),
                             role_definition_id=str(p.role_definition_id), principal_id=str(p.principal_id))


def definition_from_sdk(d: Any) -> HsmRoleDefinition:
    """Our HsmRoleDefinition from ``KeyVaultRoleDefinition``."""
    perms = d.permissions or []
    return HsmRoleDefinition(
        id=str(d.id), name=str(d.name), role_name=str(d.role_name or d.name), role_type=str(_s(d.role_type) or ""),
        data_actions=tuple(str(_s(x)) for p in perms for x in (p.data_actions or [])),
        not_data_actions=tuple(str(_s(x)) for p in perms for x in (p.not_data_actions or [])),
        assignable_scopes=tuple(str(_s(s)) for s in (d.assignable_scopes or ["/"])), description=d.description or "")


def denied_action(exc: BaseException) -> tuple[str | None, str | None]:
    """(data action, scope) an HSM's AccessDenied text names: "Not authorized to access {action} on {scope}"
    (azure-cli#32719; an older text quotes the scope: "on '/keys'")."""
    m = _DENIED.search(str(getattr(exc, "message", None) or exc))
    return (m.group(1), m.group(2)) if m else (None, None)


def translate(what: str, hsm: str, exc: Exception) -> AzureUnavailableError:
    """One SDK exception as a domain error with the remedy."""
    first = (str(exc).splitlines() or [""])[0][:240]
    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError) and status == HTTPStatus.FORBIDDEN:
        action, scope = denied_action(exc)
        return HsmAccessDeniedError(
            f"{what}: Managed HSM {hsm} refused the function's identity ({first}); assign it the local role "
            f"{AUDITOR} at / to read role assignments and definitions (az keyvault role assignment create --hsm-name "
            f"{hsm} --role \"{AUDITOR}\" --scope / --assignee-object-id <its object id>), and to apply, Managed HSM "
            "Policy Administrator; if the text names no data action, check the HSM's network rules (firewall, private "
            "endpoint)", hsm, action, scope)
    if isinstance(exc, ClientAuthenticationError) or status == HTTPStatus.UNAUTHORIZED:
        return AzureUnavailableError(
            f"{what}: no token for Managed HSM {hsm} ({type(exc).__name__}: {first}); check the credential "
            "(AZURE_CLIENT_ID / managed identity) and that the HSM's tenant is the identity's")
    return AzureUnavailableError(
        f"{what}: Managed HSM {hsm} could not be read ({type(exc).__name__}: {first}); check network access to "
        f"{hsm}'s host (DNS, firewall, private endpoint) and retry")


class HsmFacts:
    """Managed HSM facts for one batch, through the real SDK clients, with a request counter. Close after use."""

    # Keyword-only settings, each defaulted, as ArmFacts takes them (Backend.hsm_facts passes the backend's through).
    def __init__(self, credential: Any, subscriptions: Sequence[str], *, cloud: Cloud = PUBLIC,  # noqa: PLR0913
                 arm_url: str | None = None, connection_verify: str | bool | None = None,
                 transport_factory: Callable[[], Any] | None = None, retry_after_cap_s: float = 30.0,
                 retry_total: int = 10, count: Callable[[Any], None] | None = None) -> None:
        """``transport_factory``: one transport per client (the emulator's, which resolves HSM hosts to loopback);
        without it azure-core's ``AioHttpTransport`` with ``connection_verify``. ``count``: also told of every
        request (the diagnosis's fact source counts them with its own)."""
        self._credential = credential
        self.subscriptions = tuple(subscriptions)
        self._cloud = cloud
        self._arm_url = (arm_url or cloud.arm).rstrip("/")
        self._verify = connection_verify
        self._transport_factory = transport_factory
        self._retry = (retry_after_cap_s, retry_total)
        self._mgmt: dict[str, Any] = {}
        self._data: dict[str, Any] = {}
        self._also_count = count
        self.requests = 0

    def _count(self, request: Any) -> None:
        self.requests += 1
        if self._also_count is not None:
            self._also_count(request)

    def _common(self) -> dict[str, Any]:
        transport = self._transport_factory() if self._transport_factory is not None else None
        if transport is None:
            from azure.core.pipeline.transport import AioHttpTransport

            transport = AioHttpTransport(**({} if self._verify is None else {"connection_verify": self._verify}))
        return {"raw_request_hook": self._count, "transport": transport,
                "retry_policy": capped_retry_policy(*self._retry)}

    def management(self, subscription: str) -> Any:
        """azure-mgmt-keyvault's async client for one subscription (``managed_hsms``)."""
        client = self._mgmt.get(subscription.lower())
        if client is None:
            from azure.mgmt.keyvault.aio import KeyVaultManagementClient

            client = KeyVaultManagementClient(self._credential, subscription, base_url=self._arm_url,
                                              credential_scopes=[self._cloud.arm_scope], **self._common())
            self._mgmt[subscription.lower()] = client
        return client

    def access_control(self, hsm: ManagedHsm) -> Any:
        """The HSM's ``KeyVaultAccessControlClient`` (aio), at its ``hsmUri``; the SDK's challenge protocol finds the
        token audience (https://managedhsm.azure.net in the public cloud) and checks it matches the host."""
        if not hsm.hsm_uri:
            raise AzureUnavailableError(f"Managed HSM {hsm.name}: ARM gives no hsmUri (provisioning state "
                                        f"{hsm.provisioning_state}); wait for the HSM to finish provisioning")
        host = (urlsplit(hsm.hsm_uri).hostname or "").lower()
        client = self._data.get(host)
        if client is None:
            from azure.keyvault.administration.aio import KeyVaultAccessControlClient

            client = KeyVaultAccessControlClient(hsm.hsm_uri, self._credential, **self._common())
            self._data[host] = client
        return client

    def settings(self, hsm: ManagedHsm) -> Any:
        """The HSM's ``KeyVaultSettingsClient`` (aio), at its ``hsmUri``, on the same credential and transport."""
        if not hsm.hsm_uri:
            raise AzureUnavailableError(f"Managed HSM {hsm.name}: ARM gives no hsmUri (provisioning state "
                                        f"{hsm.provisioning_state}); wait for the HSM to finish provisioning")
        key = "settings|" + (urlsplit(hsm.hsm_uri).hostname or "").lower()
        client = self._data.get(key)
        if client is None:
            from azure.keyvault.administration.aio import KeyVaultSettingsClient

            client = KeyVaultSettingsClient(hsm.hsm_uri, self._credential, **self._common())
            self._data[key] = client
        return client

    async def close(self) -> None:
        for c in [*self._mgmt.values(), *self._data.values()]:
            await c.close()
        self._mgmt.clear()
        self._data.clear()

    async def __aenter__(self) -> HsmFacts:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, what: str, hsm: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (HttpResponseError, ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
            raise translate(what, hsm, exc) from exc

    # -- the management plane ------------------------------------------------------------------------------

    async def get_hsm(self, resource_id: str) -> ManagedHsm | None:
        """The HSM by resource id (``managed_hsms.get``); None when ARM has none there (404)."""
        m = _HSM_ID.match(resource_id.rstrip("/"))
        if m is None:
            raise ValueError(f"{resource_id!r} is not a Managed HSM resource id")
        sub, rg, name = m.groups()

        async def call() -> ManagedHsm | None:
            try:
                got = await self.management(sub).managed_hsms.get(rg, name)
            except ResourceNotFoundError:
                return None
            return None if got is None else hsm_from_sdk(got)
        return await self._call(f"reading Managed HSM {name} from ARM", name, call)

    async def find_hsm(self, name_or_host: str) -> ManagedHsm | None:
        """The HSM named ``name`` or served at ``{name}.managedhsm.azure.net`` (any cloud's suffix): the configured
        subscriptions' ``managed_hsms.list_by_subscription``, matched on name or ``hsmUri`` host."""
        target = name_or_host.strip().lower()
        if "://" in target:
            target = urlsplit(target).hostname or ""
        name = target.split(".", 1)[0]

        async def listing(sub: str) -> list[ManagedHsm]:
            async def call() -> list[ManagedHsm]:
                return [hsm_from_sdk(h) async for h in self.management(sub).managed_hsms.list_by_subscription()]
            return await self._call(f"listing Managed HSMs in subscription {sub}", name, call)

        for found in await asyncio.gather(*(listing(s) for s in self.subscriptions)):
            for h in found:
                host = (urlsplit(h.hsm_uri or "").hostname or "").lower()
                if h.name.lower() == name and ("." not in target or host in ("", target)):
                    return h
        return None

    # -- the data plane: local RBAC -------------------------------------------------------------------------

    async def local_rbac(self, hsm: ManagedHsm, key_name: str | None = None) -> HsmAccess:
        """Every local assignment at ``/``, ``/keys`` and ``/keys/{key_name}`` (read in parallel) and the role
        definitions at ``/`` (custom ones, and the built-ins as this HSM lists them)."""
        client = self.access_control(hsm)
        scopes = scopes_for(key_name)

        async def assignments(scope: str) -> list[HsmRoleAssignment]:
            async def call() -> list[HsmRoleAssignment]:
                return [assignment_from_sdk(a) async for a in client.list_role_assignments(scope)]
            return await self._call(f"listing local role assignments at {scope}", hsm.name, call)

        async def definitions() -> list[HsmRoleDefinition]:
            async def call() -> list[HsmRoleDefinition]:
                return [definition_from_sdk(d) async for d in client.list_role_definitions("/")]
            return await self._call("listing local role definitions at /", hsm.name, call)

        per_scope, defs = await asyncio.gather(asyncio.gather(*(assignments(s) for s in scopes)), definitions())
        seen: dict[str, HsmRoleAssignment] = {}
        for found in per_scope:
            for a in found:
                seen.setdefault(a.id.lower(), a)
        custom = tuple(d for d in defs if not d.builtin)
        return HsmAccess(hsm=hsm.name, scopes=scopes, assignments=tuple(seen.values()), custom_definitions=custom,
                         builtin_definitions=tuple(d for d in defs if d.builtin))

    async def read_setting(self, hsm: ManagedHsm, name: str) -> HsmSetting:
        """One HSM account setting (``KeyVaultSettingsClient.get_setting``: ``GET {hsmUri}/settings/{name}``, api
        7.4+, answering ``{"name", "value", "type": "boolean"}``: azure-keyvault-administration's generated
        ``build_key_vault_get_setting_request`` and ``models.Setting``). A setting the HSM does not have (404) is
        a HsmSetting with no value and the reason; any other failure is a domain error (a 403 an
        HsmAccessDeniedError naming the data action the HSM refused)."""
        client = self.settings(hsm)

        async def call() -> HsmSetting:
            try:
                got = await client.get_setting(name)
            except ResourceNotFoundError:
                return HsmSetting(hsm.name, name, problem=f"Managed HSM {hsm.name} has no setting {name}")
            return HsmSetting(hsm.name, str(got.name or name), None if got.value is None else str(got.value),
                              _s(getattr(got, "setting_type", None)))
        return await self._call(f"reading the setting {name}", hsm.name, call)

    async def read_definition(self, hsm: ManagedHsm, name: str) -> HsmRoleDefinition | None:
        """One role definition at ``/`` by name (GUID); None when the HSM has none (404)."""
        client = self.access_control(hsm)

        async def call() -> HsmRoleDefinition | None:
            try:
                return definition_from_sdk(await client.get_role_definition("/", name))
            except ResourceNotFoundError:
                return None
        return await self._call(f"reading local role definition {name}", hsm.name, call)

    async def read_assignment(self, hsm: ManagedHsm, scope: str, name: str) -> HsmRoleAssignment | None:
        """One assignment by scope and name; None when the HSM has none (404)."""
        client = self.access_control(hsm)

        async def call() -> HsmRoleAssignment | None:
            try:
                return assignment_from_sdk(await client.get_role_assignment(normalise_scope(scope), name))
            except ResourceNotFoundError:
                return None
        return await self._call(f"reading local role assignment {name} at {scope}", hsm.name, call)


# -- the write side (apply calls these) -----------------------------------------------------------------------

def _ours(a: HsmRoleAssignment, scope: str, role_definition_id: str, principal_id: str) -> bool:
    return (a.principal_id.lower() == principal_id.lower() and a.role_guid == guid_of(role_definition_id)
            and normalise_scope(a.scope).lower() == normalise_scope(scope).lower())


async def ensure_assignment(facts: HsmFacts, hsm: ManagedHsm, scope: str, role_definition_id: str,
                            principal_id: str) -> HsmWrite:
    """Assign ``role_definition_id`` to ``principal_id`` at ``scope`` under our deterministic name, idempotently:
    already there -> nothing written; else one PUT (retried by the SDK on a lost answer; the same name and content
    twice is the same assignment), then read back. ApplyError when it cannot be made or confirmed."""
    scope = normalise_scope(scope)
    name = assignment_name(principal_id, scope, role_definition_id)
    what = f"assigning local role {guid_of(role_definition_id)} to {principal_id} at {scope} on {hsm.name}"
    try:
        have = await facts.read_assignment(hsm, scope, name)
        if have is not None and not _ours(have, scope, role_definition_id, principal_id):
            raise ApplyError(f"{what}: an assignment named {name} exists with other content ({have.role_definition_id}"
                             f" for {have.principal_id}); it was not made by kv-remediate, so nothing was changed: "
                             "remove it by hand if it is stale")
        changed = False
        if have is None:
            client = facts.access_control(hsm)
            try:
                await client.create_role_assignment(scope, role_definition_id, principal_id, name=name)
            except HttpResponseError as exc:
                if exc.status_code != HTTPStatus.CONFLICT:   # it exists (a retried PUT whose first answer was lost)
                    raise translate(what, hsm.name, exc) from exc
            except (ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
                raise translate(what, hsm.name, exc) from exc
            changed = True
        back = await facts.read_assignment(hsm, scope, name)
    except AzureUnavailableError as exc:
        raise ApplyError(f"{what}: {exc.message}") from exc
    if back is None or not _ours(back, scope, role_definition_id, principal_id):
        raise ApplyError(f"{what}: the HSM did not show the assignment when read back; nothing is recorded as "
                         "applied: run again (the write is idempotent)")
    return HsmWrite(hsm=hsm.name, scope=scope, name=name, assignment=back, changed=changed, verified=True)


async def remove_assignment(facts: HsmFacts, hsm: ManagedHsm, scope: str, role_definition_id: str,
                            principal_id: str) -> HsmWrite:
    """Delete the assignment :func:`ensure_assignment` would have made, and only it: an assignment of our name
    with other content is left alone (ApplyError). Gone already -> nothing written. Read back to confirm."""
    scope = normalise_scope(scope)
    name = assignment_name(principal_id, scope, role_definition_id)
    what = f"removing local role assignment {name} at {scope} on {hsm.name}"
    try:
        have = await facts.read_assignment(hsm, scope, name)
        if have is None:
            return HsmWrite(hsm=hsm.name, scope=scope, name=name, assignment=None, changed=False, verified=True)
        if not _ours(have, scope, role_definition_id, principal_id):
            raise ApplyError(f"{what}: it holds other content than kv-remediate wrote ({have.role_definition_id} for "
                             f"{have.principal_id}); left in place")
        client = facts.access_control(hsm)
        try:
            await client.delete_role_assignment(scope, name)   # no error when already gone (4.0.0 CHANGELOG)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
            raise translate(what, hsm.name, exc) from exc
        back = await facts.read_assignment(hsm, scope, name)
    except AzureUnavailableError as exc:
        raise ApplyError(f"{what}: {exc.message}") from exc
    if back is not None:
        raise ApplyError(f"{what}: the HSM still shows it when read back; run again (the delete is idempotent)")
    return HsmWrite(hsm=hsm.name, scope=scope, name=name, assignment=None, changed=True, verified=True)


async def ensure_custom_role(facts: HsmFacts, hsm: ManagedHsm, data_actions: Sequence[str]) -> HsmRoleDefinition:
    """The least-privilege custom local role granting exactly ``data_actions`` (managedHsm key data actions only:
    anything else, a wildcard included, is a ValueError before any request), defined at ``/`` under our deterministic
    name (:func:`remediate.hsm_model.custom_role_name`), idempotently, and read back. A role of that name with other
    permissions is left alone (ApplyError)."""
    actions = sorted({_key_action(a) for a in data_actions})
    if not actions:
        raise ValueError("a custom local role needs at least one managedHsm key data action")
    name = custom_role_name(actions)
    what = f"defining local role {name} ({', '.join(a.rsplit('managedHsm/', 1)[-1] for a in actions)}) on {hsm.name}"

    def exact(d: HsmRoleDefinition) -> bool:
        return sorted(a.lower() for a in d.data_actions) == [a.lower() for a in actions] and not d.not_data_actions

    try:
        have = await facts.read_definition(hsm, name)
        if have is not None and not exact(have):
            raise ApplyError(f"{what}: a role of this name exists with other permissions; it was not defined by "
                             "kv-remediate, so nothing was changed")
        if have is None:
            from azure.keyvault.administration import KeyVaultPermission

            client = facts.access_control(hsm)
            short = ", ".join(a.rsplit("managedHsm/", 1)[-1] for a in actions)
            try:
                await client.set_role_definition(
                    "/", name=name, role_name=f"kv-remediate {short}"[:120],
                    description="Least-privilege local role defined by kv-remediate: exactly the data actions a "
                                "denied request needed.",
                    permissions=[KeyVaultPermission(data_actions=actions)], assignable_scopes=["/"])
            except (HttpResponseError, ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
                raise translate(what, hsm.name, exc) from exc
        back = await facts.read_definition(hsm, name)
    except AzureUnavailableError as exc:
        raise ApplyError(f"{what}: {exc.message}") from exc
    if back is None or not exact(back):
        raise ApplyError(f"{what}: the HSM did not show the role when read back; run again (the write is idempotent)")
    return back


def _key_action(action: str) -> str:
    found = canonical_key_action(action) if "*" not in action else None
    if found is None:
        raise ValueError(f"{action!r} is not a Managed HSM key data action; a custom role kv-remediate defines holds "
                         "only managedHsm keys/... data actions, never a wildcard")
    return found
