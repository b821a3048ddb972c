"""Masking of secrets in anything the service sends back before it is printed or written.

A service may echo the request (headers included) in an error body, so every text that came from
the service goes through `redact` on its way to a row, a record, a report or the terminal.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

API_KEY_ENV = "SCORING_API_KEY"  # the variable holding the API key unless a profile or option names another
MASK = "***"
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[^\s\"',;}\]]+")
# `Authorization: <anything up to the end of the value>` in header, JSON or repr form.
_AUTHORIZATION = re.compile(r"""(?i)(\bauthorization\b["']?\s*[:=]\s*["']?)[^"'\r\n,;}\]]*""")


_CONVENTIONAL_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def key_variable(name: str) -> str:
    """How a message names the API key's variable: `$NAME` when it reads as a variable's name (capitals,
    digits, _), else without the name: a key passed where its variable's name belongs would be echoed."""
    return f"${name}" if _CONVENTIONAL_NAME.match(name) else "the variable named by --api-key-env"


def redact(text: str | None, secrets: tuple[str | None, ...] = ()) -> str | None:
    """`text` with the API key (from the environment, plus any `secrets`), `Bearer <token>`,
    `Authorization: <value>` and URL credentials masked. None stays None."""
    if not text:
        return text
    for secret in (os.environ.get(API_KEY_ENV), *secrets):
        if secret and len(secret) >= 4:
            for form in {secret, quote(secret, safe=""), secret.encode("unicode_escape").decode("ascii")}:
                text = text.replace(form, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return safe_url(_AUTHORIZATION.sub(lambda m: m.group(1) + MASK, text))


# `scheme://user:password@` (or a token as the user name) in a URL, alone or inside a message.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]+@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access_token|secret|password|pw|sig|signature)=)[^&#\s]*")


def safe_url(text: str | None) -> str | None:
    """`text` (a URL, or a message holding URLs) with URL credentials masked like keys: the user
    and password of `http://user:pw@host/` and the value of a `?key=`/`token=`-style parameter."""
    if not text:
        return text
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text))
