"""Key Vault state: vaults and their access policies (Microsoft.KeyVault)."""

from __future__ import annotations

import copy
import json
from typing import Any

from remediate.catalog import canonical_permission
from remediate.emulator.state_common import (
    PERMISSION_KINDS,
    ArmError,
    TenantBase,
    _entry_key,
    norm,
)

# Where a vault id split on "/" holds the resource group: "/subscriptions/{sub}/resourceGroups/{rg}/...".
_RESOURCE_GROUP_AT = 4


class VaultState(TenantBase):
    """Key Vault state: vaults and their access policies (Microsoft.KeyVault)."""

    # ---- vaults --------------------------------------------------------------------------------------------
    def vault(self, vault_id: str) -> dict[str, Any]:
        """One vault by id (case-insensitive), or ARM's ResourceNotFound."""
        with self.lock:
            v = self.vaults.get(vault_id.rstrip("/").lower())
            if v is None:
                parts = vault_id.split("/")
                rg = parts[_RESOURCE_GROUP_AT] if len(parts) > _RESOURCE_GROUP_AT else "?"
                raise ArmError(404, "ResourceNotFound",
                               f"The Resource 'Microsoft.KeyVault/vaults/{parts[-1]}' under resource group '{rg}' "
                               "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
            return copy.deepcopy(v)

    def vault_json(self, vault_id: str) -> bytes:
        """One vault already encoded (under the lock, so no copy is needed: large policy lists stay cheap)."""
        with self.lock:
            v = self.vaults.get(vault_id.rstrip("/").lower())
            if v is None:
                self.vault(vault_id)  # raises ResourceNotFound
            return json.dumps(v).encode()

    def vaults_in(self, prefix: str) -> list[dict[str, Any]]:
        """Every vault whose id is under ``prefix`` (a subscription or resource group), in snapshot order."""
        p = norm(prefix) + "/"
        with self.lock:
            return [copy.deepcopy(v) for k, v in self.vaults.items() if k.startswith(p)]

    def update_access_policy(self, vault_id: str, kind: str, body: Any) -> dict[str, Any]:
        """``PUT .../vaults/{v}/accessPolicies/{add|replace|remove}``, merged per entry, atomically.

        Entries match on tenantId + objectId + applicationId (GUIDs, case-insensitive); other entries are never
        touched. ``add`` unions permissions per kind (a permission already present in any casing is kept as
        stored). ``replace`` sets the matching entry's permissions to exactly the given ones (adding the entry
        when absent) -- terraform-provider-azurerm updates one ``azurerm_key_vault_access_policy`` with
        ``replace`` while other entries survive, so replace is per entry, not per vault.

        ``remove`` takes away only the listed permissions, and an entry left with no permission at all is
        deleted. Evidence (the REST spec documents none: the body is only "Access policy to merge into the
        vault", and it has no remove example):

        * hashicorp/terraform-provider-azurerm ``key_vault_access_policy_resource.go`` (delete): "To remove a
          policy correctly, we need to send it with all permissions in the correct case ... so we read it back
          from the vault" -- it sends the entry's full current permission list with ``remove``, then waits for
          the entry to be gone. Issues #10707 / #10752 there: when the stored casing differed from what the
          provider sent, destroy waited 30 minutes for an entry that stayed.
        * Azure/azure-rest-api-specs#42963 (2026-05): "accessPolicies/remove ... performs case-sensitive
          matching on permission values ... The response is HTTP 200, but the access policy is not removed",
          while ``add`` "accepts permissions regardless of casing"; and tombuildsstuff in azure-rest-api-specs
          PR #24475: "the exact casing has to be specified when removing an Access Policy".
        * ``az keyvault delete-policy`` does not use this API at all: it GETs the vault, drops the whole entry
          client-side and PUTs the vault back (read-modify-write, which loses concurrent changes);
          ``Remove-AzKeyVaultAccessPolicy`` likewise removes all of a principal's permissions.

        So here, as in ARM: ``remove`` matches permission values case-sensitively; a permission sent in another
        casing, or an entry that does not exist, is silently left alone (200). To take a permission away, send
        it exactly as the vault stores it. An entry in a remove request with no permissions removes nothing.

        The response is the ``Microsoft.KeyVault/vaults/accessPolicies`` resource echoing the request's entries
        (as in the REST spec example ``updateAccessPoliciesAdd.json``); read the vault to see the result.
        """
        kind_l = kind.lower()
        if kind_l not in ("add", "replace", "remove"):
            raise ArmError(400, "BadRequest",
                           'Access policies operation not permitted. Allowed operations are "add", "replace", '
                           'and "remove".')
        props = body.get("properties") if isinstance(body, dict) else None
        entries = props.get("accessPolicies") if isinstance(props, dict) else None
        if not isinstance(entries, list):
            raise ArmError(400, "BadRequest", "The request body must contain properties.accessPolicies (a list).")
        clean = [self._clean_entry(e, i, kind_l) for i, e in enumerate(entries)]
        with self.lock:
            v = self.vaults.get(vault_id.rstrip("/").lower())
            if v is None:
                self.vault(vault_id)  # raises ResourceNotFound
                raise AssertionError("unreachable")
            vprops = v.setdefault("properties", {})
            tenant = str(vprops.get("tenantId") or self.snap.tenant_id).lower()
            for e in clean:
                if str(e["tenantId"]).lower() != tenant:
                    raise ArmError(400, "BadRequest", f"The access policy tenant ID '{e['tenantId']}' does not "
                                   f"match the vault's tenant ID '{vprops.get('tenantId')}'.")
            current: list[dict[str, Any]] = vprops.setdefault("accessPolicies", [])
            for e in clean:
                self._merge(current, e, kind_l)
            vid = v["id"]
        return {"id": f"{vid}/accessPolicies/", "type": "Microsoft.KeyVault/vaults/accessPolicies",
                "properties": {"accessPolicies": clean}}

    @staticmethod
    def _clean_entry(e: Any, i: int, kind: str) -> dict[str, Any]:
        if not isinstance(e, dict) or not e.get("objectId") or not e.get("tenantId"):
            raise ArmError(400, "BadRequest", f"accessPolicies[{i}] must have tenantId, objectId and permissions.")
        perms = e.get("permissions") or {}
        if not isinstance(perms, dict):
            raise ArmError(400, "BadRequest", f"accessPolicies[{i}].permissions must be an object.")
        out_perms: dict[str, list[str]] = {}
        for k, values in perms.items():
            if k not in PERMISSION_KINDS or not isinstance(values, list):
                raise ArmError(400, "BadRequest", f"accessPolicies[{i}].permissions.{k} is not valid.")
            for p in values:
                if not isinstance(p, str) or (kind != "remove" and canonical_permission(k, p) is None):
                    raise ArmError(400, "BadRequest",
                                   f"Invalid permission '{p}' in accessPolicies[{i}].permissions.{k}.")
            out_perms[k] = list(values)
        out = {"tenantId": e["tenantId"], "objectId": e["objectId"], "permissions": out_perms}
        if e.get("applicationId"):
            out["applicationId"] = e["applicationId"]
        return out

    @staticmethod
    def _merge(current: list[dict[str, Any]], e: dict[str, Any], kind: str) -> None:
        key = _entry_key(e)
        idx = next((i for i, c in enumerate(current) if _entry_key(c) == key), None)
        if idx is None:
            if kind != "remove":     # add or replace: a new entry; remove: nothing to take from
                current.append(copy.deepcopy(e))
        elif kind == "add":
            _add_permissions(current[idx].setdefault("permissions", {}), e["permissions"])
        elif kind == "replace":
            current[idx]["permissions"] = copy.deepcopy(e["permissions"])
        else:
            have = current[idx].setdefault("permissions", {})
            for k, values in e["permissions"].items():
                if k in have:
                    have[k] = [p for p in have[k] if p not in values]  # exact, case-sensitive (see docstring)
            if not any(have.get(k) for k in PERMISSION_KINDS):
                del current[idx]


def _add_permissions(have: dict[str, list[str]], added: dict[str, list[str]]) -> None:
    """Add each permission not already held (compared case-insensitively, as Key Vault does), keeping the order."""
    for k, values in added.items():
        lst = have.setdefault(k, [])
        for p in values:
            if p.lower() not in (x.lower() for x in lst):
                lst.append(p)
