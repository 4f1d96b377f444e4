"""Unit rules of intake: ids, resource ids, claims, status, operation inference, cause hints.

Each test: given one value as inputs carry it, when the shared extractor reads it, then the validated value
(or None, never a guess) comes out.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediate import decide
from remediate.intake import message
from remediate.intake.claims import principal_from_caller, principal_from_claims, tenant_from_iss
from remediate.intake.message import text_signals
from remediate.intake.operations import ops_for_path, resolve_operation
from remediate.intake.values import guid, object_from_path, status_value, vault_from_resource_id, vault_uri
from remediate.model import Denial, ObjectRef, Principal, Signal

G = "5b8f1c2d-3e4a-4b6c-8d7e-9f0a1b2c3d4e"
T = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(("value", "expected"), [
    (G, G),
    (G.upper(), G),
    ("00000000-0000-0000-0000-000000000000", None),          # nil GUID: a placeholder
    ("00000000-0000-0000-0000-0000000000000", None),         # wrong length (ACA blog)
    ("d4ba3e84-0444-4841-aaf7-XXXXXX", None),                # masked and partial (SIEM docs)
    ("XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX", None),
    ("<app-id>", None), ("***", None), ("azure_client_id", None), ("", None), (None, None), (42, None),
    (["not", "a", "guid"], None),
])
def test_guid_validation(value: Any, expected: str | None) -> None:
    assert guid(value) == expected


def test_resource_id_keeps_case_trims_to_the_vault_and_reads_the_object() -> None:
    rid = f"/subscriptions/{G}/resourceGroups/RG-Pay/providers/Microsoft.KeyVault/vaults/KV-Pay/secrets/db/"
    vault, obj = vault_from_resource_id(rid)
    assert vault.resource_id == f"/subscriptions/{G}/resourceGroups/RG-Pay/providers/Microsoft.KeyVault/vaults/KV-Pay"
    assert vault.name == "KV-Pay"
    assert vault.key == vault.resource_id.lower()
    assert obj == ObjectRef(kind="secrets", name="db")


@pytest.mark.parametrize("rid", [
    "/subscriptions/F40A1F1D-F2C6-4444-XXXX/resourcegroups/integration/providers/microsoft.keyvault/vaults/keytestint",
    "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/EXAMPLE-RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/EXAMPLE-VAULT",
    "/subscriptions/<subscription ID>/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv1",
])
def test_resource_id_with_a_masked_subscription_keeps_only_the_name(rid: str) -> None:
    vault, _ = vault_from_resource_id(rid)
    assert vault.resource_id is None
    assert vault.name is not None


@pytest.mark.parametrize(("path", "kind", "name", "version"), [
    ("/deletedsecrets/old", "secrets", "old", None),
    ("/deletedkeys/MyFirstKey", "keys", "MyFirstKey", None),
    ("/deletedcertificates/c1", "certificates", "c1", None),
    ("/keys/k1/0123456789abcdef0123456789abcdef/sign", "keys", "k1", "0123456789abcdef0123456789abcdef"),
    ("/secrets/s/00000000000000000000000000000000", "secrets", "s", None),  # all-zero version: a placeholder
    ("/secrets/7cXXXXXXXX96", "secrets", None, None),                       # masked name
])
def test_object_from_request_uri(path: str, kind: str, name: str | None, version: str | None) -> None:
    uri = vault_uri(f"https://kv1.vault.azure.net{path}?api-version=7.4")
    assert uri is not None and uri.vault == "kv1"
    assert object_from_path(uri.path) == ObjectRef(kind=kind, name=name, version=version)
    rid = f"/subscriptions/{G}/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv1{path}"
    _, obj = vault_from_resource_id(rid)
    assert obj == ObjectRef(kind=kind, name=name, version=version)


def test_vault_uri_ignores_other_hosts() -> None:
    assert vault_uri("https://management.azure.com/subscriptions/x") is None
    assert vault_uri("https://kv-gov.vault.usgovcloudapi.net/secrets/a").vault == "kv-gov"  # type: ignore[union-attr]


@pytest.mark.parametrize(("claims", "expected"), [
    ({"oid": G, "appid": T, "idtyp": "app"}, Principal(object_id=G, app_id=T, kind="app")),
    ({"oid": G, "upn": "a@b.com", "scp": "user_impersonation"}, Principal(object_id=G, upn="a@b.com", kind="user")),
    ({"oid": G, "appidacr": "2"}, Principal(object_id=G, kind="app")),
    ({"http://schemas.microsoft.com/identity/claims/objectidentifier": G,
      "http://schemas.microsoft.com/identity/claims/tenantid": T,
      "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "a@b.com"},
     Principal(object_id=G, tenant_id=T, upn="a@b.com", kind="user")),
    ({"identity_claim_oid_g": G, "identity_claim_appid_g": T, "identity_claim_idtyp_s": "app"},
     Principal(object_id=G, app_id=T, kind="app")),
    ({"identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g": G},
     Principal(object_id=G)),
    ({"oid": G, "iss": f"https://sts.windows.net/{T}/"}, Principal(object_id=G, tenant_id=T)),
    ({"upn": "live.com#username@outlook.com"}, Principal(upn="live.com#username@outlook.com", kind="user")),
])
def test_principal_from_claims(claims: dict[str, Any], expected: Principal) -> None:
    assert principal_from_claims(claims) == expected


def test_caller_text_and_issuer() -> None:
    p = principal_from_caller(f"appid={T};oid={G};numgroups=0;iss=https://sts.windows.net/{T}/")
    assert (p.object_id, p.app_id, p.tenant_id, p.kind) == (G, T, T, None)
    mi = principal_from_caller(f"appid={T};oid={G};iss=https://sts.windows.net/{T}/;xmsmirid=/subscriptions/x")
    assert mi.kind == "app"
    assert tenant_from_iss("https://sts.windows.net/azure_tenant_id/") is None


@pytest.mark.parametrize(("value", "expected"), [
    (403, 403), (403.0, 403), ("403", 403), ("403 (Forbidden)", 403), ("Forbidden", 403), ("Unauthorized", 401),
    ("TooManyRequests", 429), ("Throttled", 429), ("OK", 200), ("Success", None), (True, None), ("4031", None),
    (None, None), ("", None),
])
def test_status_value(value: Any, expected: int | None) -> None:
    assert status_value(value) == expected


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/secrets/db/", "SecretGet"),
    ("GET", "/secrets/db/0123456789abcdef0123456789abcdef", "SecretGet"),
    ("PUT", "/secrets/db", "SecretSet"),
    ("DELETE", "/deletedsecrets/db", "SecretPurge"),
    ("GET", "/deletedkeys", "KeyListDeleted"),
    ("POST", "/keys/k/0123456789abcdef0123456789abcdef/sign", "KeySign"),
    ("GET", "/keys/k/rotationpolicy", "KeyRotationPolicyGet"),
    ("GET", "/certificates/issuers", "CertificateIssuersList"),
    ("PUT", "/certificates/contacts", "CertificateContactsSet"),
    ("POST", "/certificates/c/create", "CertificateCreate"),
    ("POST", "/storage/acct/regeneratekey", "StorageAccountRegenerateKey"),
])
def test_method_and_path_match_one_catalogue_operation(method: str, path: str, expected: str) -> None:
    assert [o.name for o in ops_for_path(path, method)] == [expected]


def test_operation_from_one_side_fills_the_other() -> None:
    sign = resolve_operation(permission=("keys", "sign"))
    assert (sign.operation, sign.data_action, sign.permission) == (
        "KeySign", "Microsoft.KeyVault/vaults/keys/sign/action", {"keys": ("sign",)})
    act = resolve_operation(action="microsoft.keyvault/vaults/secrets/setsecret/action")
    assert (act.operation, act.data_action, act.permission) == (
        "SecretSet", "Microsoft.KeyVault/vaults/secrets/setSecret/action", {"secrets": ("set",)})
    word = resolve_operation(word="decrypt")
    assert word.operation == "KeyDecrypt"


def test_ambiguous_permission_names_no_operation_unless_the_path_decides() -> None:
    assert resolve_operation(permission=("secrets", "get")).operation is None
    assert resolve_operation(permission=("secrets", "get"), path="/deletedsecrets/x").operation == "SecretGetDeleted"
    assert resolve_operation(permission=("secrets", "get"), path="/secrets/x").operation == "SecretGet"
    assert resolve_operation(operation="VaultGet").operation == "VaultGet"  # log vocabulary kept as given
    assert resolve_operation(operation="not an op!").operation is None


def cause_hint(*, status: int, texts: list[str | None], principal: Principal, operation: str | None = None,
               status_only: bool = False) -> str | None:
    """Intake's signals for these texts on a denial, mapped by decide (the one mapping of signals to causes)."""
    signals = text_signals(texts) | ({Signal.STATUS_ONLY} if status_only else frozenset())
    hint = decide.cause_hint(Denial(source="test", status=status, principal=principal, operation=operation,
                                    signals=signals))
    return str(hint) if hint else None


KNOWN = Principal(object_id=G)


@pytest.mark.parametrize(("status", "text", "principal", "expected"), [
    (401, "AKV10000: Request is missing a Bearer or PoP token.", Principal(), "AUTH_CHALLENGE"),
    (401, "AKV10032: Invalid issuer.", KNOWN, "AUTH_FAILED"),
    (429, None, KNOWN, "THROTTLED"),
    (403, "Client address is not authorized and caller is not a trusted service.", KNOWN, "NETWORK_BLOCKED"),
    (403, "ForbiddenByConnection", KNOWN, "NETWORK_BLOCKED"),
    (403, "Public network access is disabled and request is not from a trusted service", KNOWN, "NETWORK_BLOCKED"),
    (403, "Access denied to first party service.", KNOWN, "TRUSTED_SERVICE_DENIED"),
    (403, "Operation decrypt is not permitted on this key.", KNOWN, "KEY_OPERATION_NOT_PERMITTED"),
    (403, "Operation get is not allowed on a disabled secret.", KNOWN, "OBJECT_DISABLED"),
    (403, "the request must be made on behalf of a user (compound identity)", KNOWN, "COMPOUND_IDENTITY_REQUIRED"),
    (403, "Caller is not authorized to perform action on resource.", Principal(), "PRINCIPAL_NOT_IDENTIFIED"),
    (403, "Caller is not authorized to perform action on resource.", KNOWN, None),
    (404, "SecretNotFound", KNOWN, None),
])
def test_cause_hint(status: int, text: str | None, principal: Principal, expected: str | None) -> None:
    assert cause_hint(status=status, texts=[text], principal=principal) == expected


def test_authentication_401_without_identity_is_the_challenge() -> None:
    assert cause_hint(status=401, texts=[], principal=Principal(), operation="Authentication") == "AUTH_CHALLENGE"
    assert cause_hint(status=401, texts=[], principal=Principal(), status_only=True) is None


_SIGNAL_WORDS = ["Throttled", "THROTTLED", "AKV10000", "missing a Bearer", "ForbiddenByFirewall",
                 "forbiddenbyconnection", "network security perimeter", "NSP", "nsp", "Client address",
                 "is not authorized", "Public network access is disabled", "Access denied to first party service",
                 "KeyOperationForbidden", "is not permitted on this key", "SecretDisabled", "not allowed on a disabled",
                 "on-behalf-of", "On Behalf Of", "compound identity", "OBO", "xOBO", "\u212aeyDisabled",
                 "\u017fecretDisabled", "\u0130", " ", "\n", "-", "_", "é"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_SIGNAL_WORDS), st.text(max_size=6)), max_size=8))
def test_text_signals_find_exactly_what_each_pattern_finds(parts: list[str]) -> None:
    # given any text built from the signal words, their case variants, look-alike letters and noise
    blob = "".join(parts)
    # when intake reads its signals (lower-cased, case-sensitive searches on ASCII text)
    # then they are exactly the signals whose own pattern matches the text as it is
    expected = frozenset(signal for signal, pattern in message._TEXT_SIGNALS if pattern.search(blob))
    assert message._text_signals(blob) == expected


@pytest.mark.parametrize(("spelled", "suggested"), [("decrypt", "KeyDecrypt"), ("SecretGett", "SecretGet")])
def test_a_runbook_request_with_a_wrong_operation_name_suggests_the_nearest(spelled: str, suggested: str) -> None:
    # given a runbook request naming an operation the catalogue does not know
    from remediate.errors import InputError
    from remediate.intake.runbook import parse_runbook

    # when it is parsed, then it is refused, naming the nearest catalogue names as the --operation flag does
    with pytest.raises(InputError) as err:
        parse_runbook("req.json", {"principal_id": G, "vault": "kv-payments", "operation": spelled})
    assert f"is not a Key Vault operation name (e.g. SecretGet, KeyDecrypt); did you mean {suggested}" \
        in err.value.message


def test_a_runbook_operation_with_no_near_name_points_at_the_list() -> None:
    from remediate.errors import InputError
    from remediate.intake.runbook import parse_runbook

    with pytest.raises(InputError) as err:
        parse_runbook("req.json", {"principal_id": G, "vault": "kv-payments", "operation": "zzzzzz"})
    assert "did you mean" not in err.value.message and "`kv-remediate operations` lists them all" in err.value.message
