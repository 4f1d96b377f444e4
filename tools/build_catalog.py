"""Build the package's permission catalogue from ../shared/reference (run by hand; output is committed).

The app never reads ../shared at run time: this script turns Microsoft's mappings, provider operations and
built-in role definitions into compact JSON under remediate/catalog/data/.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference"
OUT = ROOT / "remediate" / "catalog" / "data"

KV = "Microsoft.KeyVault/vaults/"

# Canonical access-policy permission spelling, as the ARM enums print them.
CANON = {
    "keys": ["all", "encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify", "get", "list", "create",
             "update", "import", "delete", "backup", "restore", "recover", "purge", "release", "rotate",
             "getrotationpolicy", "setrotationpolicy"],
    "secrets": ["all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge"],
    "certificates": ["all", "get", "list", "delete", "create", "import", "update", "managecontacts", "getissuers",
                     "listissuers", "setissuers", "deleteissuers", "manageissuers", "recover", "purge", "backup",
                     "restore"],
    "storage": ["all", "get", "list", "delete", "set", "update", "regeneratekey", "recover", "purge", "backup",
                "restore", "setsas", "listsas", "getsas", "deletesas"],
}
CANON_LOWER = {k: {p.lower(): p for p in v} for k, v in CANON.items()}

# Managed storage account operations are not in the operation-map CSV; their log names follow the
# documented Key Vault pattern and their permissions come from Microsoft's access-policy-to-RBAC CSV (basis I).
STORAGE_OPS = [
    ("StorageAccountGet", "GET", "/storage/{storage-account-name}", "get"),
    ("StorageAccountList", "GET", "/storage", "list"),
    ("StorageAccountSet", "PUT", "/storage/{storage-account-name}", "set"),
    ("StorageAccountUpdate", "PATCH", "/storage/{storage-account-name}", "update"),
    ("StorageAccountDelete", "DELETE", "/storage/{storage-account-name}", "delete"),
    ("StorageAccountRegenerateKey", "POST", "/storage/{storage-account-name}/regeneratekey", "regeneratekey"),
    ("StorageAccountBackup", "POST", "/storage/{storage-account-name}/backup", "backup"),
    ("StorageAccountRestore", "POST", "/storage/restore", "restore"),
    ("StorageAccountRecover", "POST", "/deletedstorage/{storage-account-name}/recover", "recover"),
    ("StorageAccountPurge", "DELETE", "/deletedstorage/{storage-account-name}", "purge"),
    ("StorageAccountGetDeleted", "GET", "/deletedstorage/{storage-account-name}", "get"),
    ("StorageAccountListDeleted", "GET", "/deletedstorage", "list"),
    ("StorageSasDefinitionGet", "GET", "/storage/{storage-account-name}/sas/{sas-definition-name}", "getsas"),
    ("StorageSasDefinitionList", "GET", "/storage/{storage-account-name}/sas", "listsas"),
    ("StorageSasDefinitionSet", "PUT", "/storage/{storage-account-name}/sas/{sas-definition-name}", "setsas"),
    ("StorageSasDefinitionUpdate", "PATCH", "/storage/{storage-account-name}/sas/{sas-definition-name}", "setsas"),
    ("StorageSasDefinitionDelete", "DELETE", "/storage/{storage-account-name}/sas/{sas-definition-name}",
     "deletesas"),
]


def ap_mapping() -> dict[tuple[str, str], list[str]]:
    """(kind, permission) -> data actions, from Microsoft's AcessPolicyRBACMapping.csv."""
    kinds = {"Key": "keys", "Secret": "secrets", "Certificate": "certificates", "Storage": "storage"}
    out: dict[tuple[str, str], list[str]] = {}
    with open(REF / "mappings" / "AcessPolicyRBACMapping.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            kind_word, perm = row["Access Policy Permission"].split(" ", 1)
            kind = kinds[kind_word]
            out[(kind, CANON_LOWER[kind][perm.lower()])] = row["RBAC Data Action"].split(";")
    return out


def parse_permission(cell: str) -> tuple[str, list[str]]:
    kind, rest = cell.split(":", 1)
    kind = kind.strip()
    rest = re.sub(r"\(.*", "", rest)
    perms = [p.strip() for p in re.split(r"\+", rest) if p.strip()]
    return kind, [CANON_LOWER[kind][p.lower()] for p in perms]


def operations() -> list[dict[str, object]]:
    ops: list[dict[str, object]] = []
    with open(REF / "mappings" / "DERIVED_operation-map.csv", newline="") as fh:
        for row in csv.reader(fh):
            if row[0] == "diagnostic_operationName":
                continue
            name, method, path, perm, action, basis = row
            kind, perms = parse_permission(perm)
            m = re.match(r"\(none in log table\) (\w+)", name)
            op_name = None if m else name
            if action.startswith("UNKNOWN"):
                # Only certificatecontacts/write is published; reading contacts is covered by the same role.
                action = KV + "certificatecontacts/write"
                basis += "; RBAC=I (no read action is published)"
            ops.append({
                "operation": op_name,
                "alias": m.group(1) if m else None,
                "method": method,
                "path": path,
                "object_kind": kind,
                "access_policy": {kind: perms},
                "data_actions": [action],
                "basis": basis,
            })
    mapping = ap_mapping()
    for name, method, path, perm in STORAGE_OPS:
        ops.append({
            "operation": name, "alias": None, "method": method, "path": path, "object_kind": "storage",
            "access_policy": {"storage": [perm]}, "data_actions": mapping[("storage", perm)],
            "basis": "I (log name inferred; permission and data action from AcessPolicyRBACMapping.csv)",
        })
    # Extra operation names from the logging docs that the CSV folds into others.
    extras = [("CertificatePolicySet", "PUT", "/certificates/{certificate-name}/policy", "certificates", "update",
               KV + "certificates/update/action"),
              ("CertificateEnroll", "POST", "/certificates/{certificate-name}/create", "certificates", "create",
               KV + "certificates/create/action"),
              ("CertificateRenew", "POST", "/certificates/{certificate-name}/create", "certificates", "create",
               KV + "certificates/create/action")]
    for name, method, path, kind, perm, action in extras:
        ops.append({"operation": name, "alias": None, "method": method, "path": path, "object_kind": kind,
                    "access_policy": {kind: [perm]}, "data_actions": [action],
                    "basis": "I (logging docs name; same REST call as the base operation)"})
    return ops


def tier(action: str) -> int:
    a = action.lower()
    if a.endswith("/delete") or a.endswith("/purge/action"):
        return 3
    if a.endswith("/read") or a.endswith("secrets/readmetadata/action"):
        return 0
    use = ("secrets/getsecret/action", "keys/encrypt/action", "keys/decrypt/action", "keys/wrap/action",
           "keys/unwrap/action", "keys/sign/action", "keys/verify/action", "keys/release/action",
           "certificates/release/action")
    if a.endswith(use) or a.endswith("/backup/action"):
        return 1
    return 2


def data_actions() -> list[dict[str, object]]:
    d = json.loads((REF / "provider-operations" / "Microsoft.KeyVault.json").read_text())
    seen: dict[str, dict[str, object]] = {}
    for rt in d["resourceTypes"]:
        for o in rt["operations"]:
            if o["isDataAction"] and o["name"].startswith(KV):
                seen.setdefault(o["name"], {"name": o["name"], "display_name": o["displayName"],
                                            "tier": tier(o["name"])})
    return sorted(seen.values(), key=lambda x: str(x["name"]))


def roles() -> list[dict[str, object]]:
    d = json.loads((REF / "roles" / "_bundle_all_relevant_builtin_roles.json").read_text())
    return [{"id": r["id"], "name": r["name"], "roleName": r["roleName"], "roleType": r["roleType"],
             "description": r["description"], "permissions": r["permissions"],
             "assignableScopes": r["assignableScopes"]} for r in d]


def main() -> int:
    if not REF.is_dir():
        print(f"build_catalog: {REF} not found", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    dump = {"operations.json": operations(), "data_actions.json": data_actions(), "roles.json": roles(),
            "permissions.json": {"canonical": CANON,
                                 "mapping": [{"kind": k, "permission": p, "data_actions": v}
                                             for (k, p), v in sorted(ap_mapping().items())]}}
    for name, obj in dump.items():
        (OUT / name).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    print(f"wrote {', '.join(dump)} to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
