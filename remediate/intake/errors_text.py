"""Key Vault REST error bodies and the text SDKs, tools and logs print for them.

One block of text is one error, however many times the tool repeats it (message, then ``Code:``/``Message:``
or ``Content:``); several *different* embedded JSON bodies in one block (log lines) are several errors.
Status comes from the tool's own status line (``Status: 403``, ``RESPONSE 403``, ``StatusCode=403``,
``Status code 403``, ``statusCode: 403``, ``.reply(403``), else from the error code (``Forbidden``,
``Unauthorized``, ``Throttled``), else from the service's wording.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import TooLargeError
from . import limits, platform
from .drafting import Draft, Outcome
from .message import implied_status, service_line
from .operations import canonical_operation
from .values import CODE_STATUS, DENIAL_STATUSES, as_dict, status_value, text

# Which tool printed it: first match wins, most specific first.
_SOURCES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("error.go_autorest", re.compile(r"autorest/azure|BaseClient#\w+|Original Error:|"
                                     r"Service returned an error\. Status=\d")),
    ("error.go", re.compile(r"^RESPONSE \d{3}: |^ERROR CODE: ", re.MULTILINE)),
    ("error.dotnet", re.compile(r"RequestFailedException|^[ \t]{0,64}Status: \d{3} \(", re.MULTILINE)),
    ("error.java", re.compile(r"HttpResponseException|com\.azure\.|Status code \d{3}")),
    ("error.javascript", re.compile(r"RestError|statusCode: \d{3}|^[ \t]{0,64}at [^\n]{1,4096}?\.js:\d", re.MULTILINE)),
    ("error.python_legacy", re.compile(r"KeyVaultErrorException|azure\.keyvault\.(?:v7_\d\.)?models|"
                                       r"msrest\.exceptions|Operation returned an invalid status code")),
    ("error.python", re.compile(r"azure\.core\.exceptions|HttpResponseError|Traceback \(most recent call last\)|"
                                r"ResourceNotFoundError|ClientAuthenticationError")),
    ("error.azure_cli", re.compile(r"^ERROR: |^\$ az |^az keyvault ", re.MULTILINE)),
)
# Az PowerShell error records (its words checked as substrings first: most blocks have none of them).
_POWERSHELL_WORDS = ("Microsoft.Azure.Commands.", "-AzKeyVault", "PowerShell exited", "InvocationInfo")
_POWERSHELL = re.compile(r"Microsoft\.Azure\.Commands\.|-AzKeyVault(?:Secret|Key|Certificate)\b|"
                         r"PowerShell exited with code|^InvocationInfo[ \t]{0,16}:", re.MULTILINE)
# App Service's Key Vault reference statuses (checked as plain substrings first: most blocks have none).
_PLATFORM_WORDS = ("AccessToKeyVaultDenied", "MSINotEnabled", "UnauthorizedClient")
# azure-core's text: a "(Code) message" line, and a "Code: X" line after it (two linear scans, no lazy run).
_CORE_PAREN = re.compile(r"(?:^|[ \t])\(\w{1,128}\) [^\n]", re.MULTILINE)
_CORE_CODE = re.compile(r"^Code: \w", re.MULTILINE)

# Every pattern below runs over a whole block (up to the 4 MiB body limit): each quantifier is bounded, and no
# '^\s*' under MULTILINE (it would run across every following blank line from every line start: quadratic).
_STATUS = re.compile(
    r"Status:\s{0,8}(\d{3})\b|RESPONSE (\d{3})\b|StatusCode=(\d{3})\b|Status=(\d{3})\b|Status code (\d{3})\b|"
    r"\"?statusCode\"?\s{0,8}[:=]\s{0,8}(\d{3})\b|\.reply\((\d{3})\b|HTTP/\d(?:\.\d)? (\d{3})\b|"
    r"invalid status code '(\w{1,64})'|\"status\"\s{0,8}:\s{0,8}(\d{3})\b")
# Python requests' HTTPError ("403 Client Error: Forbidden for url: ..."), searched only where its words are.
_CLIENT_ERROR = re.compile(r"\b(\d{3}) Client Error: ")
_CODE_LINE = re.compile(r"^[ \t]{0,64}(?:Code|ERROR CODE|ErrorCode):[ \t]{0,8}\"?(\w{1,128})", re.MULTILINE)
_PAREN_CODE = re.compile(r"^(?:ERROR: |[\w.]{1,256}(?:Error|Exception): )?\((\w{1,128})\)(?: |$)", re.MULTILINE)
# "(Code) <Key Vault's own wording>" anywhere on a line (quoted in prose, after a tool's prefix).
_SERVICE_PAREN_CODE = re.compile(r"\((\w{1,128})\) (?=Not authorized to access|Caller is not authorized|"
                                 r"The user, group or application|Operation \w{1,40} is not|Connection is not|"
                                 r"Client address|Access denied)")
# Go azcore on one condensed line, a bulleted status line
_ANY_CODE = re.compile(r"ERROR CODE:[ \t]{0,8}(\w{1,128})|HTTP Status Code:[ \t]{0,8}([A-Za-z]{1,64})\b|"
                       r"ERROR: -> ([A-Za-z]{1,64}) : ")
# "ForbiddenByConnection: <message>": the inner code as a prefix
_PREFIX_INNER = re.compile(r"^[ \t]{0,64}(ForbiddenBy(?:Connection|Firewall|Rbac|Policy))[ \t]{0,8}:", re.MULTILINE)
_AUTOREST_CODE = re.compile(r"\bCode=\"(\w{1,128})\"")
_JS_CODE = re.compile(r"\bcode: '(\w{1,128})'")
_MESSAGE_LINE = re.compile(r"^[ \t]{0,64}Message:[ \t]{0,8}([^\n]{1,8192}"
                           r"(?:\n(?![ \t]{0,64}(?:Code|Inner error|Target|Exception Details):)[^\n]{1,8192}){0,64})",
                           re.MULTILINE)
# Inner error in every printed shape: {"code": "X"}, {code:X} (unquoted), ***"code":"X"*** (braces masked by CI),
# "Inner error: X", "innererror.code: X", "innercode":{"code":"X"}.
_INNER = re.compile(r"Inner ?(?:error|code)(?:\.code)?\"?\s{0,8}[:=]\s{0,8}"
                    r"(?:(?:\{|\*{1,3})\s{0,8}\"?code\"?\s{0,8}:\s{0,8}\"?|\"?)(\w{1,128})", re.IGNORECASE)
_AUTOREST_MSG = re.compile(r"Message=\"((?:[^\"\\]|\\.){0,8192})\"?")
_BODY_START = re.compile(r"\{\s{0,64}\"error\"\s{0,64}:|\{\s{0,64}\\\"error\\\"\s{0,64}:|\{\s{0,64}'error'\s{0,64}:")
_TRUNC_CODE = re.compile(r"\"code\"\s{0,8}:\s{0,8}\"(\w{1,128})\"")
_TRUNC_MSG = re.compile(r"\"message\"\s{0,8}:\s{0,8}\"((?:[^\"\\]|\\.){0,8192})")
_TRUNC_INNER = re.compile(r"inner[eE]rror\"\s{0,8}:\s{0,8}\{\s{0,8}\"code\"\s{0,8}:\s{0,8}\"(\w{1,128})\"")
_REQUEST = re.compile(r"^[ \t]{0,64}(GET|PUT|POST|PATCH|DELETE|HEAD) (https://\S{1,4096})|"
                      r"Request URL: '(https://[^'\n]{1,4096})'|Request method: '(\w{1,16})'|"
                      r"\burl: '(https://[^'\n]{1,4096})'|\bmethod: '(\w{1,16})'|"
                      r"nock\('(https://[^'\n]{1,4096})'|^[ \t]{0,64}\.(get|put|post|patch|delete)\('([^'\n]{0,4096})'|"
                      r"\"url\":[ \t]{0,8}\"(https://[^\"\n]{1,4096}|\*{3}[^\"\n]{1,4096})\"|"
                      r"\"method\":[ \t]{0,8}\"(\w{1,16})\"",
                      re.MULTILINE)
# azure-keyvault-* client methods named in Python output (``get_secret``): the operation the caller's code ran.
_PY_METHOD = re.compile(r"\b(get|set|delete|purge|recover|backup|restore|update|create|import)_"
                        r"(secret|key|certificate)(?![a-z])")
_VAULT_URL = re.compile(r"https://[A-Za-z0-9-]{1,64}\.vault(?:core)?\.(?:azure\.net|azure\.cn|usgovcloudapi\.net|"
                        r"microsoftazure\.de)[^\s\"'<>)]{0,4096}")
# One body is decoded from at most this many characters after its '{' (a REST error body is a few KiB).
_BODY_WINDOW = 64 * 1024
# Anchors that mark a block as a Key Vault / Azure SDK error (recognised even when it is not a denial).
_RECOGNISED = re.compile(
    r"[{,]\s{0,64}\\?[\"']error\\?[\"']\s{0,64}:|Status:\s{0,8}\d{3}\b|RESPONSE \d{3}:|StatusCode=\d{3}\b|"
    r"Status code \d{3}\b|statusCode\"?:\s{0,8}\d{3}\b|^Code: \w{1,128}$|^(?:ERROR: )?\(\w{1,128}\) \w|\bAKV\d{5}\b|"
    r"Caller is not authorized to perform|does not have \w{1,40} \w{1,40} permission on key vault|"
    r"is not permitted on this key|Access denied to first party|"
    r"Client address: \d|Operation is not allowed|not allowed on a disabled|get_token failed|"
    r"challenge resource '|CredentialUnavailableError|ClientAuthenticationError|HttpResponseError|"
    r"RequestFailedException|RestError|HttpResponseException|KeyVaultErrorException|"
    r"Operation returned an invalid status code|Request was not processed because too many requests",
    re.MULTILINE)
# More of Key Vault's (and its wrappers') own words, as plain substrings (one C scan each, no regex branch per
# character); then the two that need a pattern.
_RECOGNISED_WORDS = ("Original Error: autorest", "Caller was not found on any access policy",
                     "The policy requires the caller '", "not an approved private link",
                     "Public network access is disabled", "Client address is not authorized",
                     "Not authorized to access Microsoft.KeyVault/managedHsm/", "not authorized to read secrets from '",
                     "AccessToKeyVaultDenied", "MSINotEnabled", "UnauthorizedClient",
                     "does not have permission to perform the operation on the key vault")
_RECOGNISED_MORE = re.compile(r"Service returned an error\. Status=\d{3}|does not have access to '[^'\n]{0,1024}' "
                              r"Key Vault|\b\d{3} Client Error: \w{1,64} for url: https://")
# Documentation and queries quote error texts; they are not errors (markdown tables, HTML comments, KQL pipes).
_DOCUMENT = re.compile(r"^[ \t]{0,64}\|[ :-]{0,64}-{2}|^[ \t]{0,64}<!--|"
                       r"^[ \t]{0,64}\|[ \t]{0,64}(?:where|summarize|project|extend)\b|^//", re.MULTILINE)

_SDK_METHOD = re.compile(r"BaseClient#(\w{1,128})")
_METHOD_VERB = re.compile(r"(Get|Set|Delete|Update|Create|Import|Backup|Restore|Recover|Purge)(Deleted)?"
                          r"(Secret|Key|Certificate)(s|Versions)?$")
_KEY_OPS = {"Encrypt": "KeyEncrypt", "Decrypt": "KeyDecrypt", "Sign": "KeySign", "Verify": "KeyVerify",
            "WrapKey": "KeyWrap", "UnwrapKey": "KeyUnwrap", "RotateKey": "KeyRotate"}


def sdk_method_operation(method: str) -> str | None:
    """The OperationName of an SDK client method (autorest ``BaseClient#GetSecret`` -> SecretGet)."""
    if method in _KEY_OPS:
        return _KEY_OPS[method]
    m = _METHOD_VERB.fullmatch(method)
    if m is None:
        return None
    verb, deleted, noun, tail = m.groups()
    if deleted:
        name = noun + {"Get": "ListDeleted" if tail else "GetDeleted", "Recover": "Recover", "Purge": "Purge"}.get(
            verb, "")
    elif tail == "s" and verb == "Get":
        name = noun + "List"
    elif tail == "Versions" and verb == "Get":
        name = noun + "ListVersions"
    elif tail:
        return None
    else:
        name = noun + verb
    return canonical_operation(name)


@dataclass
class _Body:
    """A REST error body: ``{"error": {"code", "message", "innererror"|"innerError"}}``."""

    code: str | None
    message: str | None
    inner: str | None
    start: int
    end: int


def body_of(obj: Any) -> _Body | None:
    """The error body inside a parsed JSON value (``{"error": {...}}`` or a bare ``{"code","message"}``)."""
    d = as_dict(obj)
    err = as_dict(d.get("error")) or as_dict(d.get("Error")) or (d if "code" in d and "message" in d else {})
    if not err:
        return None
    code = text(err.get("code") if "code" in err else err.get("Code"))
    message = err.get("message") if "message" in err else err.get("Message")
    inner_obj = as_dict(err.get("innererror")) or as_dict(err.get("innerError")) or as_dict(err.get("InnerError"))
    inner = text(inner_obj.get("code"))
    return _Body(code, message if isinstance(message, str) else None, inner, 0, 0)


def _bodies(block: str) -> list[_Body]:
    """Every distinct error body embedded in a block (plain, backslash-escaped or truncated)."""
    out: list[_Body] = []
    seen: set[tuple[str | None, str | None, str | None]] = set()
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        m = _BODY_START.search(block, pos)
        if m is None:
            break
        start = m.start()
        head = block[start:start + 20]
        escaped = head.startswith("{\\") or "\\\"error\\\"" in head
        quoted = m.group(0).startswith("{'") or head[:12].replace(" ", "").startswith("{'error'")
        body: _Body | None = None
        end = start + len(m.group(0))
        try:
            if escaped or quoted:  # rewritten copy of a bounded window, never of the rest of the block
                snippet = block[start:start + _BODY_WINDOW]
                if escaped:
                    snippet = snippet.replace('\\"', '"')
                if quoted:
                    snippet = snippet.replace("'", '"')
                value, used = decoder.raw_decode(snippet)
                end = start + used if not escaped else start + len(m.group(0))
            else:
                value, used = decoder.raw_decode(block, start)
                end = used
            body = body_of(value)
        except (ValueError, RecursionError):
            snippet = block[start:start + _BODY_WINDOW]
            if escaped:
                snippet = snippet.replace('\\"', '"')
            if quoted:
                snippet = snippet.replace("'", '"')
            code = _TRUNC_CODE.search(snippet)
            msg = _TRUNC_MSG.search(snippet)
            body = _Body(code.group(1) if code else None, _unescape(msg.group(1)) if msg else None, None, start, end)
            inner = _TRUNC_INNER.search(snippet)
            body.inner = inner.group(1) if inner else None
            end = len(block)
        if body is not None:
            body.start, body.end = start, max(end, start + 1)
            key = (body.code, body.message, body.inner)
            if key not in seen:
                seen.add(key)
                out.append(body)
                if len(out) > limits.MAX_BODIES:
                    raise TooLargeError(limits.current_name(), "distinct error bodies in one text block", len(out),
                                        limits.MAX_BODIES, "send one error text per input")
        pos = max(end, start + 1)
    return out


def _unescape(s: str) -> str:
    try:
        value = json.loads(f'"{s}"')
        return value if isinstance(value, str) else s
    except (ValueError, RecursionError):
        return s.replace("\\r\\n", "\n").replace("\\n", "\n")


def recognised(block: str) -> bool:
    """True when a text block is an Azure SDK / Key Vault error (documentation and queries quoting one are not)."""
    found = (_RECOGNISED.search(block) is not None or any(w in block for w in _RECOGNISED_WORDS)
             or (("Service returned" in block or "does not have access" in block or " Client Error: " in block)
                 and _RECOGNISED_MORE.search(block) is not None))
    return found and _DOCUMENT.search(block) is None


def source_of(block: str) -> str:
    """The tool that printed a block, as a ``error.*`` (or ``platform.*``) source name."""
    if (any(word in block for word in _PLATFORM_WORDS) and platform.REFUSAL_TEXT.search(block)) or \
            "/config/configreferences/" in block:
        return platform.SOURCE
    for name, pattern in _SOURCES:
        if name == "error.python_legacy" and any(w in block for w in _POWERSHELL_WORDS) and _POWERSHELL.search(block):
            return "error.powershell"  # before msrest: Az PowerShell prints msrest's "invalid status code" too
        if pattern.search(block):
            return name
    paren = _CORE_PAREN.search(block)
    if paren is not None and _CORE_CODE.search(block, paren.end()):
        return "error.azure_core"
    if _BODY_START.search(block):
        stripped = block.strip()
        return "error.rest" if stripped.startswith("{") else "error.log_line"
    return "error.text"


def _status_in(segment: str) -> int | None:
    for m in _STATUS.finditer(segment):
        for g in m.groups():
            if g:
                s = status_value(g)
                if s is not None:
                    return s
    if " Client Error: " in segment:
        client = _CLIENT_ERROR.search(segment)
        if client:
            return status_value(client.group(1))
    return None


@dataclass
class _Request:
    """What a block says about the request: method, URL (or host and path), a path whose host was masked."""

    method: str | None = None
    url: str | None = None
    host: str | None = None
    path: str | None = None
    masked_path: str | None = None

    def read(self, m: re.Match[str]) -> None:
        """One match of ``_REQUEST``: the first URL and method each form names win (a later JSON copy fills gaps)."""
        g = m.groups()
        if g[0]:
            self.method, self.url = g[0], g[1]
        elif g[2] or g[4]:
            self.url = g[2] or g[4]
        elif g[3] or g[5]:
            self.method = g[3] or g[5]
        elif g[6]:
            self.host = g[6]
        elif g[7]:
            self.method, self.path = g[7], g[8]
        elif g[9]:
            self._json_url(g[9])
        elif g[10]:
            self.method = self.method or g[10]

    def _json_url(self, value: str) -> None:
        if value.startswith("*"):  # the host masked by CI ("***secrets/NAME/"): the path still names the object
            self.masked_path = "/" + value.lstrip("*")
        elif self.url is None:
            self.url = value

    def apply(self, block: str, draft: Draft) -> None:
        if self.url is None and self.masked_path is not None:
            draft.add_path(self.masked_path)
        if self.url:
            draft.add_uri(self.url)
        elif self.host:
            draft.add_uri(self.host.rstrip("/") + (self.path or "/"))
        else:
            vm = _VAULT_URL.search(block)
            if vm:
                draft.add_uri(vm.group(0))
        if self.method and (self.url or self.host or self.masked_path):
            draft.method = self.method.upper()


def _request(block: str, draft: Draft) -> None:
    found = _Request()
    for m in _REQUEST.finditer(block):
        found.read(m)
    found.apply(block, draft)
    sm = _SDK_METHOD.search(block)
    if sm:
        draft.named_by_method(sdk_method_operation(sm.group(1)))
    pm = _PY_METHOD.search(block) if draft.operation is None and ("_secret" in block or "_key" in block
                                                                  or "_certificate" in block) else None
    if pm:
        draft.named_by_method(sdk_method_operation(pm.group(1).capitalize() + pm.group(2).capitalize()))


def _text_draft(block: str, source: str) -> Draft:
    """One error from a block without a JSON body: ``(Code) message``, ``Code:``/``Message:``, autorest."""
    d = Draft(source=source)
    code = None
    for pat in (_CODE_LINE, _PAREN_CODE, _AUTOREST_CODE, _JS_CODE, _SERVICE_PAREN_CODE, _ANY_CODE):
        m = pat.search(block)
        if m:
            code = m.group(m.lastindex or 1)
            break
    d.error_code = code
    inner = _INNER.search(block) or _PREFIX_INNER.search(block)
    d.inner_code = inner.group(1) if inner else None
    msg = None
    am = _AUTOREST_MSG.search(block)
    if am:
        msg = _unescape(am.group(1))
    else:
        mm = _MESSAGE_LINE.search(block)
        if mm:
            msg = mm.group(1).strip()
        else:
            pm = _PAREN_CODE.search(block) or _SERVICE_PAREN_CODE.search(block)
            if pm:
                line_end = block.find("\n", pm.end())
                msg = block[pm.end(): line_end if line_end >= 0 else len(block)].strip()
    d.message = msg
    d.add_message(block)
    d.message = msg or service_line(block) or _plain_message(block)
    return d


def _plain_message(block: str) -> str | None:
    lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return lines[0][:500] if lines else None


def _finish(d: Draft, segment: str, whole: str) -> None:
    status = _status_in(segment) or _status_in(whole)
    if status is None:
        for c in (d.error_code, d.inner_code):
            if c:
                status = CODE_STATUS.get(c.lower())
                if status:
                    break
    d.status = status or implied_status(d.message) or implied_status(segment)
    if d.source == platform.SOURCE:  # a Key Vault reference always reads a secret
        d.status = d.status or platform.text_status(segment)
        d.named_by_method("SecretGet")
    if platform.relayed(segment, d.status):
        d.relayed = True


def parse_block(block: str) -> Outcome | None:
    """Denials in one block of error text (see the module docstring); None when it names no status, code or text."""
    out = Outcome()
    source = source_of(block)
    bodies = _bodies(block)
    drafts: list[Draft] = []
    if bodies:
        prev = 0
        for b in bodies:
            d = Draft(source=source, error_code=b.code, inner_code=b.inner)
            d.message = b.message
            d.add_message(b.message)
            segment = block[prev:b.start] if len(bodies) > 1 else block
            d.add_message(segment)
            d.message = b.message
            _request(segment if len(bodies) > 1 else block, d)
            _finish(d, block[prev:b.end] if len(bodies) > 1 else block, block if len(bodies) == 1 else "")
            drafts.append(d)
            prev = b.end
    else:
        d = _text_draft(block, source)
        _request(block, d)
        _finish(d, block, block)
        drafts.append(d)
    if all(d.status is None and d.error_code is None and d.inner_code is None and not d.message for d in drafts):
        return None
    for d in drafts:
        if d.status in DENIAL_STATUSES:
            out.denials.append(d.build())
        else:
            out.skipped += 1
    return out


def _own_status(value: Any) -> int | None:
    """A numeric HTTP status (403, "403"), never a word: a body's ``status`` may be anything else."""
    return status_value(value) if isinstance(value, int) or (isinstance(value, str) and value[:3].isdigit()) else None


def parse_body(obj: Any) -> Outcome | None:
    """A parsed JSON REST error body as one Denial (or one skipped record), or None when it is not one."""
    b = body_of(obj)
    if b is None:
        return None
    d = Draft(source="error.rest", error_code=b.code, inner_code=b.inner)
    d.add_message(b.message)
    d.message = b.message
    top = as_dict(obj)  # a connector's or tool's own status beside the body (Logic Apps: {"status": 401, "error"})
    d.status = (_own_status(top.get("status")) or _own_status(top.get("statusCode"))
                or (CODE_STATUS.get(b.code.lower()) if b.code else None)
                or (CODE_STATUS.get(b.inner.lower()) if b.inner else None) or implied_status(b.message))
    out = Outcome()
    if d.status in DENIAL_STATUSES:
        out.denials.append(d.build())
    else:
        out.skipped += 1
    return out
