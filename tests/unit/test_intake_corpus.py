"""The second intake corpus (tests/fixtures/intake2: real published texts by family, sources in its SOURCES.md).

Given a text as people paste it (Terraform, older service wordings, network refusals, App Service / Container
Apps / Logic Apps wrappers, Kubernetes events and controller logs, CI and markdown log shapes, Managed HSM, masked
names), when it is parsed alone, then the denials carry exactly the fields its row in expected.py gives (masked
or placeholder names and ids are null, never a wrong value); ``NoDenial`` rows yield no denial at all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from remediate.errors import InputError
from remediate.intake import parse_one
from tests.support.intake_expect import FIXTURES, Bad, Ok, dotted

CORPUS = FIXTURES / "intake2"
_SPEC = importlib.util.spec_from_file_location("intake2_expected", CORPUS / "expected.py")
assert _SPEC is not None and _SPEC.loader is not None
_EXPECTED_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_EXPECTED_MODULE)
EXPECTED: dict[str, Any] = _EXPECTED_MODULE.EXPECTED
NoDenial: type = _EXPECTED_MODULE.NoDenial
SUFFIXES = {".txt", ".json", ".log", ".md"}
CASE_INSENSITIVE = {"vault.name", "vault.resource_id"}  # ARM names and ids compare case-insensitively


def _same(path: str, got: Any, want: Any) -> bool:
    if path in CASE_INSENSITIVE and isinstance(got, str) and isinstance(want, str):
        return got.lower() == want.lower()
    return bool(got == want)


def _corpus_files() -> list[str]:
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*")
                  if p.is_file() and p.suffix in SUFFIXES and p.name != "SOURCES.md")


def test_every_corpus_file_has_an_expectation_and_a_source() -> None:
    # given the corpus on disk, then each file has a row in expected.py and a line in SOURCES.md
    assert sorted(EXPECTED) == _corpus_files()
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    assert [rel for rel in EXPECTED if f"`{Path(rel).name}`" not in sources] == []


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_corpus_text(rel: str) -> None:
    # given a real published text, when parsed alone
    expected = EXPECTED[rel]
    name = Path(rel).name
    data = (CORPUS / rel).read_bytes()
    try:
        result = parse_one(name, data)
    except InputError as exc:
        # then an unusable input is refused by name (only where the row says no denial can be read from it)
        assert isinstance(expected, (NoDenial, Bad)), f"{name}: refused: {exc.message}"
        assert exc.message.startswith(name)
        if isinstance(expected, Bad):
            assert expected.contains in exc.message
        return
    got = [d.to_dict() for d in result.denials]
    if isinstance(expected, NoDenial):
        assert got == []
        return
    assert isinstance(expected, Ok), f"{name}: parsed, but the row expects an InputError"
    # then the denials carry the fields the text really says
    assert len(got) == len(expected.denials), [g["status"] for g in got]
    for i, (doc, want) in enumerate(zip(got, expected.denials, strict=True)):
        for path, value in want.items():
            assert _same(path, dotted(doc, path), value), f"denial {i} {path}: {dotted(doc, path)!r} != {value!r}"
    assert result.skipped == expected.skipped
    assert len(result.notes) == expected.notes, result.notes
    if expected.note_contains:
        assert any(expected.note_contains in n for n in result.notes), result.notes


AP_TEXT = ("The user, group or application 'appid=04b07795-8ddb-461a-bbee-02f9e1bf7b46;oid=XXXX' does not have secrets "
           "get permission on key vault '{vault};location=westeurope'.")


@pytest.mark.parametrize("masked", ["XXX-keyvault", "[MY-KEY-VAULT]", "<vault>", "***", "kv-***", "xxxx-prod"])
def test_a_masked_vault_name_is_null_never_a_wrong_name(masked: str) -> None:
    # given Key Vault's access-policy text whose vault name was masked by the person who pasted it
    d = parse_one("pasted.txt", AP_TEXT.format(vault=masked).encode()).denials[0]
    # then the vault is unknown, and the rest of the text is still read
    assert d.vault.name is None and d.vault.resource_id is None
    assert d.access_policy_permission == {"secrets": ("get",)}


@pytest.mark.parametrize(("scope", "kept"), [("/keys", "/keys"), ("/", "/"), ("/keys/k1", "/keys/k1"),
                                             ("/keys/../x", None), ("/keys/a.b", None)])
def test_a_managed_hsm_scope_is_kept_only_in_its_own_shape(scope: str, kept: str | None) -> None:
    # given a Managed HSM refusal naming a local scope, when parsed, then the scope is kept only when well formed
    text = f"(AccessDenied) Not authorized to access Microsoft.KeyVault/managedHsm/keys/create on '{scope}'"
    d = parse_one("hsm.txt", text.encode()).denials[0]
    assert d.vault.kind == "managed_hsm" and d.vault.scope == kept
    assert d.data_action == "Microsoft.KeyVault/managedHsm/keys/create"
