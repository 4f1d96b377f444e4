"""Platform wrappers around Key Vault refusals: App Service / Functions Key Vault reference statuses.

App Service resolves a Key Vault reference with the site's own identity and reports the outcome as a status
(``ResolveStatus``, documented in the App Service REST API and every SDK: Initialized, Resolved, InvalidSyntax,
MSINotEnabled, VaultNotFound, SecretNotFound, SecretVersionNotFound, AccessToKeyVaultDenied, OtherReasons,
FetchTimedOut, UnauthorizedClient), both in the ARM list ``.../config/configreferences/appsettings`` and as the
text the portal shows. Only the refusals are denials: AccessToKeyVaultDenied (the vault refused the site: 403),
UnauthorizedClient (the token was refused: 401) and MSINotEnabled (the site has no identity, so it sent no token:
401, the same remedy as a refused token). A reference always reads a secret (SecretGet).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from ..model import ObjectRef, VaultRef
from . import limits
from .drafting import Draft, Outcome
from .values import as_dict, object_name, text, vault_name

SOURCE = "platform.app_service_reference"
REFERENCE_STATUS: dict[str, int | None] = {
    "accesstokeyvaultdenied": 403, "unauthorizedclient": 401, "msinotenabled": 401, "resolved": 200,
    "vaultnotfound": 404, "secretnotfound": 404, "secretversionnotfound": 404, "invalidsyntax": 400,
    "fetchtimedout": 504, "otherreasons": None, "initialized": None}
_REFUSALS = (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN)
#: The refusal statuses as they appear in text (the portal's status line, a pasted ARM response).
REFUSAL_TEXT = re.compile(r"\b(AccessToKeyVaultDenied|UnauthorizedClient|MSINotEnabled)\b")


def text_status(block: str) -> int | None:
    """The status a Key Vault reference refusal named in text implies (403 or 401), else None."""
    m = REFUSAL_TEXT.search(block)
    return REFERENCE_STATUS[m.group(1).lower()] if m else None


# A Logic Apps / Power Automate Key Vault connector's own words for Key Vault's permission refusal (it reports 401).
_CONNECTOR_PERMISSION = re.compile(r"client does not have permission to perform the operation on the key vault")


def relayed(block: str, status: int | None) -> bool:
    """True when a platform reports a refusal in its own words: App Service's AccessToKeyVaultDenied (permission or
    network: the status alone does not say which) or a connector's permission message under its own 401."""
    head = block[:limits.MAX_MESSAGE_CHARS]
    if status == HTTPStatus.FORBIDDEN and "AccessToKeyVaultDenied" in head:
        return True
    return status in _REFUSALS and _CONNECTOR_PERMISSION.search(head) is not None


def is_reference_list(items: list[Any]) -> bool:
    """A list of App Service Key Vault reference resources (``properties.status`` a ResolveStatus)."""
    if not items:
        return False
    for item in items:
        d = as_dict(item)
        props = as_dict(d.get("properties"))
        status = (text(props.get("status")) or "").lower()
        if status not in REFERENCE_STATUS or not ("vaultName" in props or "/configreferences/" in
                                                  (text(d.get("id")) or "").lower()):
            return False
    return True


def references_outcome(items: list[Any]) -> Outcome:
    """One denial per refused reference (vault and secret as App Service names them); the rest are skipped."""
    limits.check_records(limits.current_name(), len(items))
    out = Outcome()
    for item in items:
        props = as_dict(as_dict(item).get("properties"))
        status = REFERENCE_STATUS.get((text(props.get("status")) or "").lower())
        if status not in _REFUSALS:
            out.skipped += 1
            continue
        d = Draft(source=SOURCE, status=status, relayed=status == HTTPStatus.FORBIDDEN)
        d.add_vault(VaultRef(name=vault_name(props.get("vaultName"))))
        d.object = ObjectRef(kind="secrets", name=object_name(props.get("secretName")))
        d.named_by_method("SecretGet")
        details = text(props.get("details"))
        d.message = details[:limits.MAX_MESSAGE_CHARS] if details else text(props.get("status"))
        out.denials.append(d.build())
    return out
