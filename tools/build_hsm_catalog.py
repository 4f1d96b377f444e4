"""Write remediate/catalog/data/hsm_roles.json: the Managed HSM built-in local roles and key data actions (run by hand;
the output is committed).

The source is a table in prose (../shared/reference/managed-hsm/README.md sections 1.2 and 1.3, from Microsoft Learn's
managed-hsm/built-in-roles.md and the 7.4 rbac.json), so the table is transcribed here rather than parsed. Where the
doc and a live HSM disagree each role says so in ``anomalies``; the app prefers what the HSM itself lists at '/'.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "remediate" / "catalog" / "data" / "hsm_roles.json"
P = "Microsoft.KeyVault/managedHsm/"
RA = ["roleAssignments/read/action", "roleAssignments/write/action", "roleAssignments/delete/action"]
RD = ["roleDefinitions/read/action", "roleDefinitions/write/action", "roleDefinitions/delete/action"]
roles = [
 ("a290e904-7015-4bba-90c8-60543313cdb4", "Managed HSM Administrator",
  ["securitydomain/download/action", "securitydomain/upload/action", "securitydomain/upload/read",
   "securitydomain/transferkey/read", *RA, *RD, "backup/start/action", "backup/status/action",
   "restore/start/action", "restore/status/action"],
  ["The doc says 'Not permitted to perform any key management operations'; the 2020 doc said it 'Grants full access "
   "to all data actions' (changed in 2021, azure-sdk-for-js#14743).",
   "A live HSM listed in Nov 2022 (azure-sdk-for-js keyvault-admin recording can_create_read_and_delete_role_"
   "assignments) also granted securitydomain/download/read and settings/read/action, settings/write/action."]),
 ("515eb02d-2335-4d2d-92f2-b1cbdf9c3778", "Managed HSM Crypto Officer",
  ["keys/deletedKeys/read/action", "keys/deletedKeys/recover/action", "keys/deletedKeys/delete", *RA, *RD],
  ["The description says it can export keys, but the doc's matrix has no export row; the Nov 2022 live listing "
   "granted keys/export/action."]),
 ("21dbd100-6940-42c2-9190-5d6cb909625b", "Managed HSM Crypto User",
  ["keys/read/action", "keys/write/action", "keys/rotate/action", "keys/create", "keys/delete",
   "keys/backup/action", "keys/restore/action", "keys/release/action", "keys/import/action",
   "keys/encrypt/action", "keys/decrypt/action", "keys/wrap/action", "keys/unwrap/action", "keys/sign/action",
   "keys/verify/action", "roleAssignments/read/action", "roleDefinitions/read/action"],
  ["The Nov 2022 live listing also granted keys/derive/action and rng/action."]),
 ("4bd23610-cdcf-4971-bdee-bdc562cc28e4", "Managed HSM Policy Administrator", [*RA, *RD], []),
 ("2c18b078-7c48-4d3a-af88-5a3a1b3f82b3", "Managed HSM Crypto Auditor",
  ["keys/read/action", "roleAssignments/read/action", "roleDefinitions/read/action", "keys/deletedKeys/delete"],
  ["The doc's matrix marks keys/deletedKeys/delete (since 2020), contradicting its description 'read (but not "
   "use)'; the Nov 2022 live listing granted keys/deletedKeys/read/action instead and no delete."]),
 ("33413926-3206-4cdd-b39a-83574fe37a17", "Managed HSM Crypto Service Encryption User",
  ["keys/read/action", "keys/wrap/action", "keys/unwrap/action"], []),
 ("21dbd100-6940-42c2-9190-5d6cb909625c", "Managed HSM Crypto Service Release User", ["keys/release/action"], []),
 ("7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8", "Managed HSM Backup",
  ["keys/backup/action", "backup/start/action", "backup/status/action"],
  ["The Nov 2022 live listing named this role 'Managed HSM Backup User'."]),
 ("6efe6056-5259-49d2-8b3d-d3d73544b20b", "Managed HSM Restore",
  ["keys/restore/action", "restore/start/action", "restore/status/action"], []),
]
# managedHsm key data actions (rbac.json 7.4 DataAction enum + the matrix; keys/rotate/action is missing from the enum,
# azure-rest-api-specs#31286) and their sensitivity tier (0 read metadata, 1 use, 2 change, 3 destroy: causes.md)
keys = [
 ("keys/read/action", 0), ("keys/encrypt/action", 1), ("keys/decrypt/action", 1), ("keys/wrap/action", 1),
 ("keys/unwrap/action", 1), ("keys/sign/action", 1), ("keys/verify/action", 1), ("keys/release/action", 1),
 ("keys/backup/action", 1), ("keys/write/action", 2), ("keys/rotate/action", 2), ("keys/create", 2),
 ("keys/import/action", 2), ("keys/restore/action", 2), ("keys/export/action", 2),
 ("keys/deletedKeys/read/action", 0), ("keys/deletedKeys/recover/action", 2), ("keys/delete", 3),
 ("keys/deletedKeys/delete", 3),
]
def main() -> int:
    out = {
     "_source": "Transcribed from shared/reference/managed-hsm/README.md section 1.2 (Microsoft Learn "
                "managed-hsm/built-in-roles.md, ms.date 11/19/2025) and section 1.3 (rbac.json 7.4). The HSM's own "
                "answer (role definitions listed at '/') wins over this file wherever they differ; see each role's "
                "'anomalies'.",
     "id_prefix": "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/",
     "roles": [{"name": g, "roleName": n, "roleType": "AKVBuiltInRole", "assignableScopes": ["/"],
                "dataActions": [P + a for a in acts], "notDataActions": [], "anomalies": an}
               for g, n, acts, an in roles],
     "key_data_actions": [{"name": P + a, "tier": t} for a, t in keys],
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
