"""Every explanation over the whole corpus reads right: no doubled words, and nothing that contradicts the
finding's own fields (issue 13, "Explanations that read wrong").

Given every input of the corpus (the published samples, the variants, the intake2 texts, the demo inputs and a
few runbook requests for the situations the corpus lacks), when they are diagnosed together against the demo
tenant (the bundled emulator, the real SDK clients), then each finding's explanation and advice agree with its
denial, cause and permission model; and ``parse`` text never shows an operation the JSON does not have.
"""

from __future__ import annotations

import asyncio
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from remediate.backends import EmulatorRun
from remediate.errors import InputError
from remediate.intake import parse_one
from remediate.model import Denial, Finding
from remediate.render.denials import _operation
from remediate.service import diagnose
from tests.support.intake_expect import FIXTURES

DEMO = resources.files("remediate").joinpath("demo")
TENANT: dict[str, Any] = json.loads(DEMO.joinpath("tenant.json").read_text())
ELSEWHERE = ("/subscriptions/5b1c0f3e-0000-4000-8000-000000000099/resourceGroups/rg-x/providers/"
             "Microsoft.KeyVault/vaults/kv-gone")
EXTRA = [  # situations the corpus has no input for: a vault named by an id in an unknown subscription
    ("runbook-by-id.json", json.dumps({"principal_id": "0f5a6c1e-0000-4000-8000-000000000001", "vault": ELSEWHERE,
                                       "operation": "SecretGet"}).encode()),
]
DOUBLED = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)


def _corpus() -> list[tuple[str, bytes]]:
    files = [p for d in ("samples", "variants", "intake2") for p in sorted((FIXTURES / d).rglob("*"))
             if p.is_file() and p.suffix in (".json", ".txt", ".log", ".md") and p.name != "SOURCES.md"
             and p.name not in ("expected.py", "check.py")]
    inputs = [(str(p.relative_to(FIXTURES)), p.read_bytes()) for p in files]
    inputs += sorted((f"demo/{f.name}", f.read_bytes()) for f in DEMO.joinpath("inputs").iterdir())
    return inputs + EXTRA


def _denials() -> list[Denial]:
    out: list[Denial] = []
    for name, data in _corpus():
        try:
            out.extend(parse_one(Path(name).name, data, max_denials=None, max_principals=None).denials)
        except InputError:
            continue  # documents and non-Key-Vault alerts in the corpus: refused by name (their own tests)
    return out


@pytest.fixture(scope="module")
def findings() -> list[Finding]:
    async def go() -> Any:
        with EmulatorRun(TENANT) as emu:
            async with emu.facts() as facts:
                return await diagnose(_denials(), facts)
    return list(asyncio.run(go()).findings)


def _texts(f: Finding) -> list[str]:
    return [f.explanation, *f.advice]


def test_the_corpus_reaches_the_situations_checked(findings: list[Finding]) -> None:
    # given the corpus, then it holds findings for each situation whose wording is checked below
    causes = {str(f.cause) for f in findings}
    assert {"VAULT_NOT_FOUND", "PRINCIPAL_NOT_IDENTIFIED", "ALREADY_GRANTED", "CONDITION_NOT_MET",
            "OBJECT_DISABLED"} <= causes
    assert any(f.cause == "VAULT_NOT_FOUND" and not f.denial.vault.name for f in findings)
    assert any(f.cause == "VAULT_NOT_FOUND" and f.denial.vault.resource_id for f in findings)
    assert any(f.cause == "PRINCIPAL_NOT_IDENTIFIED" and f.denial.principal.upn for f in findings)


def test_no_explanation_doubles_a_word(findings: list[Finding]) -> None:
    # then no explanation or advice repeats a word ("The vault vault 'kv1'")
    doubled = [(str(f.cause), m.group(0)) for f in findings for t in _texts(f) if (m := DOUBLED.search(t))]
    assert doubled == []


def _caller_problems(f: Finding) -> list[str]:
    p = f.denial.principal
    named = p.upn or p.app_id or p.object_id
    if f.cause == "PRINCIPAL_NOT_IDENTIFIED" and named and "does not name who" in " ".join(_texts(f)):
        return [f"{f.cause}: says the caller is not named, but the input names {named}"]
    return []


def _vault_problems(f: Finding) -> list[str]:
    if f.cause != "VAULT_NOT_FOUND":
        return []
    v, out = f.denial.vault, []
    if not v.name and not v.resource_id and "does not name the vault" not in f.explanation:
        out.append(f"{f.cause}: the input names no vault, the explanation does not say so")
    if (v.name or v.resource_id) and "does not name the vault" in f.explanation:
        out.append(f"{f.cause}: says no vault is named, but the input names {v.to_dict()}")
    if v.resource_id and "AZURE_SUBSCRIPTION_IDS" in " ".join(f.advice):
        out.append(f"{f.cause}: advises AZURE_SUBSCRIPTION_IDS, but the input names the subscription")
    if v.name and f"'{v.name}'" not in " ".join(_texts(f)):
        out.append(f"{f.cause}: the vault the input names is not the one explained")
    return out


def _grant_problems(f: Finding) -> list[str]:
    advice, out = " ".join(f.advice), []
    if f.cause == "ALREADY_GRANTED" and f.permission_model == "rbac" and "ccess polic" in advice:
        out.append(f"{f.cause}: an RBAC vault, advice about access policies")
    if f.cause == "ALREADY_GRANTED" and f.permission_model == "access_policy" and "RBAC" in advice:
        out.append(f"{f.cause}: an access-policy vault, advice about RBAC")
    if f.cause == "CONDITION_NOT_MET" and "evaluated per request" in " ".join(_texts(f)):
        out.append(f"{f.cause}: advises the condition is evaluated per request, after evaluating it")
    return out


def test_no_explanation_contradicts_its_finding(findings: list[Finding]) -> None:
    # then no explanation says what the finding's own fields contradict, and none leaves a placeholder unfilled
    problems = [problem for f in findings
                for problem in (*_caller_problems(f), *_vault_problems(f), *_grant_problems(f))]
    problems += [f"{f.cause}: a placeholder left unfilled: {f.explanation}" for f in findings
                 if "(unknown)" in f.explanation and f.cause != "UNKNOWN"]
    assert problems == [], "\n".join(problems)


def test_parse_text_shows_the_jsons_operation() -> None:
    # given every corpus denial, then the operation column is the JSON's operation, or '-' (with what the input
    # named instead, labelled): one source of truth
    for d in _denials():
        cell = _operation(d)
        assert cell == d.operation if d.operation else cell.startswith("-"), (d.operation, cell)
