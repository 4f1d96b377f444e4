"""The only writes kv-remediate makes, through the real SDK clients: one role assignment (or PIM schedule
request), or an ``accessPolicies/add`` of exactly the missing permissions, or one Managed HSM local role assignment
(and, first, our least-privilege custom local role); and their exact reversal.

Never a vault PUT/PATCH (that would risk the permission model, network rules and concurrent entries).
Every method is idempotent; SDK errors are translated here with the remedy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..errors import ApplyError, clip
from .arm import ArmFacts

if TYPE_CHECKING:
    from ..catalog.hsm import HsmRoleDefinition
    from ..hsm_model import HsmWrite, ManagedHsm

_VAULT = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.KeyVault/vaults/([^/]+)",
                    re.IGNORECASE)
_TRANSIENT = (ServiceRequestError, ServiceResponseError)


@dataclass(frozen=True)
class WriteResult:
    """What one write did: created, or found already there (idempotent success)."""

    created: bool
    resource_id: str
    detail: str = ""
    description: str | None = None   # the assignment's description as ARM returned it
    conflict: bool = False           # 409 RoleAssignmentExists: the same grant exists under another name


@dataclass(frozen=True)
class Assignment:
    """A role assignment as ARM returns it (the fields the reconciler and adoption need)."""

    id: str
    name: str
    scope: str
    principal_id: str
    role_definition_id: str
    description: str | None


PimStatus = Literal["provisioned", "pending_approval", "exists", "refused", "other"]


@dataclass(frozen=True)
class PimResult:
    """What a PIM schedule request came to: ``provisioned`` (active now), ``pending_approval`` (the role's
    management policy wants an approver), ``exists`` (400 RoleAssignmentExists: the principal already holds an
    active assignment of the role at the scope), ``refused`` (400 RoleAssignmentRequestPolicyValidationFailed:
    the policy refuses the request as made, e.g. its ExpirationRule), ``other`` (any other request status)."""

    status: PimStatus
    request_id: str
    code: str = ""
    detail: str = ""


def _vault_parts(vault_id: str) -> tuple[str, str, str]:
    m = _VAULT.match(vault_id)
    if not m:
        raise ApplyError(f"applying to {vault_id}: not a Key Vault resource id; nothing was changed")
    sub, rg, name = m.groups()
    return sub, rg, name


def _fail(what: str, exc: Exception) -> ApplyError:
    code = getattr(getattr(exc, "error", None), "code", None) or type(exc).__name__
    status = getattr(exc, "status_code", None)
    todo = {401: "check the function's credential", 403: "give the function's identity the right to make this "
            "change (see infra/README.md: apply mode)", 400: "check the plan's ids", 404: "the target no longer "
            "exists; re-run the diagnosis"}.get(status or 0, "retry later; the change is idempotent")
    first = clip(str(exc), 200)
    return ApplyError(f"{what}: {code} ({status or 'no response'}) {first}; {todo}")


def _assignment(a: Any) -> Assignment:
    return Assignment(id=str(a.id or ""), name=str(a.name or ""), scope=str(a.scope or ""),
                      principal_id=str(a.principal_id or ""), role_definition_id=str(a.role_definition_id or ""),
                      description=a.description)


def _pim_status(status: Any) -> PimStatus:
    """The REST spec's request ``status`` values, as the outcomes apply tells apart."""
    text = str(getattr(status, "value", status) or "").lower()
    if text in ("provisioned", "granted", "scheduled", "schedulecreated"):
        return "provisioned"
    if text in ("pendingapproval", "pendingapprovalprovisioning", "pendingadmindecision"):
        return "pending_approval"
    return "other"


class ArmWriter:
    """Writes through an ArmFacts' clients (same credential, endpoint, retry policy and request counter)."""

    def __init__(self, facts: ArmFacts) -> None:
        self.facts = facts
        self._hsms: dict[str, ManagedHsm] = {}

    # -- role assignments ---------------------------------------------------------------------------------------

    async def create_role_assignment(self, scope: str, name: str, role_definition_id: str, principal_id: str,
                                     principal_type: str | None, *, description: str | None = None
                                     ) -> WriteResult:
        """PUT with a deterministic name; ARM's 409 RoleAssignmentExists (same grant, other name) is success.

        ``description`` (ARM ``properties.description``) labels the assignment as ours: kv-remediate, the grant id
        and its expiry, so Azure itself says which assignments we made and until when.
        """
        from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

        params = RoleAssignmentCreateParameters(role_definition_id=role_definition_id, principal_id=principal_id,
                                                description=description)
        if principal_type:   # set so a new identity does not fail with PrincipalNotFound (replication delay)
            params.principal_type = principal_type
        rid = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
        def status(pipeline_response: Any, deserialized: Any, _headers: Any) -> tuple[int, Any]:
            return pipeline_response.http_response.status_code, deserialized

        try:
            code, created = await self.facts.authorization_client().role_assignments.create(scope, name, params,
                                                                                             cls=status)
            if code == HTTPStatus.OK:   # ARM answers 200 when this exact assignment already existed under this name
                return WriteResult(False, str(created.id or rid), "the same role assignment already exists",
                                   created.description)
            return WriteResult(True, str(created.id or rid), description=created.description)
        except ResourceExistsError as exc:
            code = getattr(getattr(exc, "error", None), "code", "")
            if code == "RoleAssignmentExists" or exc.status_code == HTTPStatus.CONFLICT:
                return WriteResult(False, rid, "the same role assignment already exists under another name: "
                                   + (clip(str(exc), 200) or code), conflict=True)
            raise _fail(f"assigning {role_definition_id} to {principal_id} at {scope}", exc) from exc
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"assigning {role_definition_id} to {principal_id} at {scope}", exc) from exc

    async def role_assignment_exists(self, scope: str, name: str, role_definition_id: str,
                                     principal_id: str) -> bool:
        """Read back: the named assignment, or any assignment of the same role to the principal at the scope."""
        client = self.facts.authorization_client().role_assignments
        try:
            if name:   # PIM names its assignments itself: then only the list below can find it
                got = await client.get(scope, name)
                return str(got.principal_id).lower() == principal_id.lower()
        except ResourceNotFoundError:
            pass
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"reading back the role assignment {name} at {scope}", exc) from exc
        guid = role_definition_id.rsplit("/", 1)[-1].lower()
        try:
            async for a in client.list_for_scope(scope, filter=f"principalId eq '{principal_id}'"):
                if str(a.scope).lower() == scope.lower() and str(a.role_definition_id).lower().endswith(guid):
                    return True
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"reading back role assignments of {principal_id} at {scope}", exc) from exc
        return False

    async def get_role_assignment(self, scope: str, name: str) -> Assignment | None:
        """One assignment by scope and name (None when ARM answers 404)."""
        try:
            a = await self.facts.authorization_client().role_assignments.get(scope, name)
        except ResourceNotFoundError:
            return None
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"reading the role assignment {name} at {scope}", exc) from exc
        return _assignment(a)

    async def list_role_assignments(self, scope: str) -> list[Assignment]:
        """Every assignment at, above and below ``scope`` (ARM's list for a scope without ``$filter``; documented
        in "List Azure role assignments using the REST API"). Used at vault scopes only, never at '/'."""
        out: list[Assignment] = []
        try:
            async for a in self.facts.authorization_client().role_assignments.list_for_scope(scope):
                out.append(_assignment(a))
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"listing role assignments at {scope}", exc) from exc
        return out

    async def delete_role_assignment(self, scope: str, name: str) -> bool:
        """Delete one assignment by name; False when it was already gone."""
        try:
            result = await self.facts.authorization_client().role_assignments.delete(scope, name)
            return result is not None
        except ResourceNotFoundError:
            return False
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"deleting role assignment {name} at {scope}", exc) from exc

    async def pim_assign(self, scope: str, name: str, role_definition_id: str, principal_id: str, *,
                         duration: str, justification: str) -> PimResult:
        """A PIM AdminAssign schedule request that expires after ``duration`` (ISO 8601).

        ``name`` must be fresh for every request: a request id is single-use in Azure ("A role assignment request
        with Id: {guid} already exists", Azure/bicep-types-az#1431, Azure/bicep#12472). The answers that are not
        errors of ours come back as a :class:`PimResult`; everything else raises ApplyError with the remedy.
        """
        from azure.mgmt.authorization.v2020_10_01.models import (
            RoleAssignmentScheduleRequest,
            RoleAssignmentScheduleRequestPropertiesScheduleInfo,
            RoleAssignmentScheduleRequestPropertiesScheduleInfoExpiration,
        )

        rid = f"{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}"
        body = RoleAssignmentScheduleRequest(
            role_definition_id=role_definition_id, principal_id=principal_id, request_type="AdminAssign",
            justification=justification,
            schedule_info=RoleAssignmentScheduleRequestPropertiesScheduleInfo(
                expiration=RoleAssignmentScheduleRequestPropertiesScheduleInfoExpiration(
                    type="AfterDuration", duration=duration)))
        try:
            got = await self.facts.authorization_client().role_assignment_schedule_requests.create(scope, name, body)
        except HttpResponseError as exc:
            code = str(getattr(getattr(exc, "error", None), "code", "") or "")
            message = clip(str(getattr(getattr(exc, "error", None), "message", "") or ""))
            if exc.status_code == HTTPStatus.BAD_REQUEST and code == "RoleAssignmentExists":
                return PimResult("exists", rid, code, message or "The Role assignment already exists.")
            if exc.status_code == HTTPStatus.BAD_REQUEST and code == "RoleAssignmentRequestPolicyValidationFailed":
                return PimResult("refused", rid, code, message)
            raise _fail(f"requesting PIM assignment of {role_definition_id} to {principal_id} at {scope}",
                        exc) from exc
        except (ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"requesting PIM assignment of {role_definition_id} to {principal_id} at {scope}",
                        exc) from exc
        return PimResult(_pim_status(got.status), str(got.id or rid), str(got.status or ""))

    async def pim_request_status(self, scope: str, name: str) -> PimStatus | None:
        """What a schedule request we sent came to, read back (None when Azure has no such request)."""
        try:
            got = await self.facts.authorization_client().role_assignment_schedule_requests.get(scope, name)
        except ResourceNotFoundError:
            return None
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"reading PIM schedule request {name} at {scope}", exc) from exc
        return _pim_status(got.status)

    # -- access policies --------------------------------------------------------------------------------------

    async def entry_permissions(self, vault_id: str, object_id: str, tenant_id: str | None) -> dict[str, list[str]]:
        """The caller's plain entry as the vault stores it (exact casing), read fresh (never from the cache)."""
        sub, rg, name = _vault_parts(vault_id)
        try:
            v = await self.facts.keyvault_client(sub).vaults.get(rg, name)
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"reading vault {name}", exc) from exc
        out: dict[str, list[str]] = {}
        for e in v.properties.access_policies or []:
            if str(e.object_id).lower() != object_id.lower() or e.application_id:
                continue
            if tenant_id and str(e.tenant_id).lower() != tenant_id.lower():
                continue
            p = e.permissions
            for kind, attr in (("keys", "keys_property"), ("secrets", "secrets"), ("certificates", "certificates"),
                               ("storage", "storage")):
                out.setdefault(kind, []).extend(str(getattr(x, "value", x)) for x in (getattr(p, attr, None) or []))
        return out

    async def _update(self, vault_id: str, op: str, tenant_id: str, object_id: str,
                      perms: dict[str, list[str]]) -> None:
        from azure.mgmt.keyvault.models import (
            AccessPolicyEntry,
            Permissions,
            VaultAccessPolicyParameters,
            VaultAccessPolicyProperties,
        )

        sub, rg, name = _vault_parts(vault_id)
        entry = AccessPolicyEntry(tenant_id=tenant_id, object_id=object_id, permissions=Permissions(
            keys_property=perms.get("keys") or [], secrets=perms.get("secrets") or [],
            certificates=perms.get("certificates") or [], storage=perms.get("storage") or []))
        body = VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=[entry]))
        try:
            await self.facts.keyvault_client(sub).vaults.update_access_policy(rg, name, op, body)
        except (HttpResponseError, ClientAuthenticationError, *_TRANSIENT) as exc:
            raise _fail(f"{op} of access-policy permissions {perms} for {object_id} on vault {name}", exc) from exc

    async def add_access_policy(self, vault_id: str, tenant_id: str, object_id: str,
                                perms: dict[str, list[str]]) -> None:
        """``accessPolicies/add``: ARM merges into the caller's entry and touches no other entry."""
        await self._update(vault_id, "add", tenant_id, object_id, perms)

    async def remove_access_policy(self, vault_id: str, tenant_id: str, object_id: str,
                                   perms: dict[str, list[str]]) -> None:
        """``accessPolicies/remove`` of exactly ``perms``, which must be spelled as the vault stores them
        (ARM matches remove case-sensitively; see the emulator's evidence)."""
        await self._update(vault_id, "remove", tenant_id, object_id, perms)



    # -- Managed HSM local RBAC (the HSM's data plane, through the backend's HsmFacts) -------------------------

    async def managed_hsm(self, hsm_id: str) -> ManagedHsm:
        """The HSM by ARM id (read once per writer): where its data plane is. ApplyError when ARM has none."""
        found = self._hsms.get(hsm_id.lower())
        if found is None:
            try:
                got = await self.facts.hsm_facts().get_hsm(hsm_id)
            except ValueError as exc:
                raise ApplyError(f"{hsm_id!r} is not a Managed HSM id; nothing was changed") from exc
            if got is None:
                raise ApplyError(f"Managed HSM {hsm_id} is not in ARM (deleted or moved?); nothing was changed; "
                                 "re-run the diagnosis")
            found = self._hsms[hsm_id.lower()] = got
        return found

    async def hsm_define_role(self, hsm_id: str, data_actions: tuple[str, ...]) -> HsmRoleDefinition:
        """Our custom local role of exactly ``data_actions`` at ``/`` (idempotent, read back: facts.hsm)."""
        from .hsm import ensure_custom_role

        hsm = await self.managed_hsm(hsm_id)
        try:
            return await ensure_custom_role(self.facts.hsm_facts(), hsm, data_actions)
        except ValueError as exc:
            raise ApplyError(f"defining a custom local role on {hsm.name}: {exc}; nothing was changed") from exc

    async def hsm_assign(self, hsm_id: str, scope: str, role_definition_id: str, principal_id: str) -> HsmWrite:
        """One local role assignment under our deterministic name (idempotent, read back: facts.hsm)."""
        from .hsm import ensure_assignment

        hsm = await self.managed_hsm(hsm_id)
        try:
            return await ensure_assignment(self.facts.hsm_facts(), hsm, scope, role_definition_id, principal_id)
        except ValueError as exc:
            raise ApplyError(f"assigning a local role on {hsm.name}: {exc}; nothing was changed") from exc

    async def hsm_holds(self, hsm_id: str, scope: str, role_definition_id: str, principal_id: str) -> bool:
        """Whether the HSM holds the assignment ``hsm_assign`` makes (its name, role, principal and scope): a fresh
        read, for verifying, adopting and reconciling."""
        from ..catalog.hsm import guid_of
        from ..hsm_model import assignment_name, normalise_scope

        hsm = await self.managed_hsm(hsm_id)
        got = await self.facts.hsm_facts().read_assignment(hsm, scope, assignment_name(principal_id, scope,
                                                                                       role_definition_id))
        return got is not None and got.principal_id.lower() == principal_id.lower() and \
            got.role_guid == guid_of(role_definition_id) and \
            normalise_scope(got.scope).lower() == normalise_scope(scope).lower()

    async def hsm_unassign(self, hsm_id: str, scope: str, role_definition_id: str, principal_id: str) -> HsmWrite:
        """Delete only the assignment ``hsm_assign`` made (idempotent, read back: facts.hsm)."""
        from .hsm import remove_assignment

        hsm = await self.managed_hsm(hsm_id)
        try:
            return await remove_assignment(self.facts.hsm_facts(), hsm, scope, role_definition_id, principal_id)
        except ValueError as exc:
            raise ApplyError(f"removing a local role assignment on {hsm.name}: {exc}; nothing was changed") from exc
