"""Request and response values passed between the HTTP server and the routes, plus paging helpers."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from remediate.emulator.state import decode_token, encode_token


@dataclass
class Request:
    """One parsed HTTP request: path percent-decoded, query keys lower-cased, body parsed from JSON."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    base_url: str
    page_size: int = 50

    def q(self, key: str) -> str | None:
        """A query parameter by case-insensitive name."""
        return self.query.get(key.lower())


@dataclass
class Response:
    """What a route answers: status, JSON body (None = empty) and extra headers."""

    status: int
    body: Any = None  # JSON-able, or bytes already encoded
    headers: dict[str, str] = field(default_factory=dict)
    write: bool = False  # the request changed the tenant (eligible for the opt-in "lost response" fault)


def paging(req: Request, key: str, token_param: str = "$skiptoken") -> tuple[int, str | None]:
    """(offset, query text): from the skip token when paging on, else offset 0 and the request's parameter."""
    tok = req.q(token_param)
    if tok:
        offset, text = decode_token(tok)
        return offset, text or None
    return 0, req.q(key)


def page(req: Request, items: list[Any], offset: int, text: str | None, *, size: int | None = None,
         token_param: str = "$skipToken", extra: dict[str, str] | None = None) -> tuple[list[Any], str | None]:
    """One page of ``items`` and the absolute next link (None on the last page).

    The link carries only an opaque token (offset + original filter), so it survives the SDK re-encoding the
    query string of a nextLink.
    """
    n = size or req.page_size
    chunk = items[offset:offset + n]
    if offset + n >= len(items):
        return chunk, None
    params = {**(extra or {}), token_param: encode_token(offset + n, text or "")}
    link = f"{req.base_url}{urllib.parse.quote(req.path, safe='/:@')}?{urllib.parse.urlencode(params)}"
    return chunk, link
