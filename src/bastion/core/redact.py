"""Credentials in URLs: found and masked before a URL is shown or recorded.

A URL a user gives (an endpoint's ``url:``, a database URL) may carry a credential: a password
in its userinfo (``https://svc:PASS@host``), a token as the whole userinfo
(``https://TOKEN@host``), or a secret-looking query parameter (``?api_key=…``, ``?token=…``,
``?password=…``, ``?sig=…``). :func:`redact_url` is the one function every part of Bastion
uses before a URL reaches a message, a log, a report (JSON, HTML, Markdown, SARIF), the BOM or
the store; the original URL is used only to make the request or open the connection.
"""

from __future__ import annotations

import re
from typing import overload
from urllib.parse import SplitResult, unquote_plus, urlsplit, urlunsplit

#: What a masked value is replaced with.
MASK = "***"

#: Parameter names that are secrets as whole words (``api_key`` = ``api`` + ``key``, ``sig``).
_SECRET_WORDS = frozenset(
    {"key", "apikey", "sig", "pw", "pwd", "pass", "token", "secret", "jwt", "sas", "otp", "hmac", "auth"}
)
#: Parameter names that are secrets when they contain one of these (``access_token``,
#: ``sslpassword``, ``X-Amz-Signature``, ``client_secret``, ``subscriptionKey``).
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "passfile",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "signature",
    "credential",
    "authorization",
    "session",
    "cookie",
    "bearer",
)
#: Schemes whose user-only userinfo (``https://TOKEN@host``) is itself a credential.
_TOKEN_USER_SCHEMES = frozenset({"http", "https", "ws", "wss"})
#: Fallback for a URL that does not parse: the userinfo of ``scheme://userinfo@``.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/?#@\s]*)@")
#: A URL inside free text (an error message): ``scheme://`` up to white space or a quote, less
#: the punctuation that ends a sentence or clause.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]]")
#: Fallback: one ``name=value`` pair of a query or fragment.
_PAIR = re.compile(r"(?P<head>[?&;#](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")


def _split(url: str) -> SplitResult | None:
    """``url`` split, or ``None`` when it does not parse as one (then patterns are used).

    A ``scheme://`` that :func:`urllib.parse.urlsplit` does not take as one (``weird scheme://``)
    counts as not parsing: its userinfo would otherwise be read as part of a path.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "://" in url and not parts.netloc:
        return None
    return parts


def _mask_userinfo(m: re.Match[str]) -> str:
    """A ``scheme://userinfo@`` match masked: ``user:***@``, or ``***@`` for a user alone."""
    info = m.group("info")
    if not info:
        return m.group(0)
    user, colon, _ = info.partition(":")
    return m.group("head") + (f"{user}:{MASK}@" if colon else f"{MASK}@")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter (or header) called ``name`` holds a credential.

    Case, ``-``/``_``/``.`` separators and camelCase do not matter: ``api_key``, ``apiKey``,
    ``X-Api-Key``, ``access_token``, ``sslpassword``, ``passfile``, ``sig``,
    ``X-Amz-Signature``, ``client_secret`` all do.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    words = [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]
    compact = "".join(words)
    return any(w in _SECRET_WORDS for w in words) or any(p in compact for p in _SECRET_PARTS)


def url_secrets(url: str) -> list[tuple[str, str]]:
    """The credentials in ``url``: ``(where, value)`` pairs, e.g. ``("query parameter 'api_key'", "SK-1")``.

    ``where`` never contains a secret; it is what a warning names. Empty values are left out.
    """
    found: list[tuple[str, str]] = []
    parts = _split(url)
    if parts is None:
        m = _USERINFO.search(url)
        if m and m.group("info"):
            user, colon, password = m.group("info").partition(":")
            if colon:
                found.append(("password in the userinfo", unquote_plus(password)))
            else:
                found.append(("token in the userinfo", unquote_plus(user)))
        for p in _PAIR.finditer(url):
            name = unquote_plus(p.group("name"))
            if p.group("value") and is_secret_name(name):
                found.append((f"query parameter {name!r}", unquote_plus(p.group("value"))))
        return found
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, colon, password = userinfo.partition(":")
        if colon and password:
            found.append(("password in the userinfo", unquote_plus(password)))
        elif not colon and user and parts.scheme.lower() in _TOKEN_USER_SCHEMES:
            found.append(("token in the userinfo", unquote_plus(user)))
    for where, text in (("query parameter", parts.query), ("fragment parameter", parts.fragment)):
        for pair in re.split(r"[&;]", text):
            name, eq, value = pair.partition("=")
            if eq and value and is_secret_name(unquote_plus(name)):
                found.append((f"{where} {unquote_plus(name)!r}", unquote_plus(value)))
    return found


def _mask_pairs(text: str) -> str:
    """``name=value`` pairs of a query with every secret value replaced by :data:`MASK`."""
    out = []
    for pair in re.split(r"([&;])", text):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_name(unquote_plus(name)):
            pair = f"{name}={MASK}"
        out.append(pair)
    return "".join(out)


@overload
def redact_url(url: str) -> str: ...


@overload
def redact_url(url: None) -> None: ...


def redact_url(url: str | None) -> str | None:
    """``url`` with every credential masked, safe for messages, logs, reports, the BOM and the store.

    - a userinfo password becomes ``***`` (``https://svc:***@host``); a user-only userinfo of
      an ``http(s)`` URL (``https://TOKEN@host``, how tokens are often passed) becomes ``***``;
      a database user name is kept (``postgresql://alice:***@host/db``);
    - the value of every secret-looking query parameter (:func:`is_secret_name`: ``api_key``,
      ``token``, ``key``, ``password``, ``secret``, ``signature``, ``sig``, ``access_token``,
      ``sslpassword``, ``passfile``, …) becomes ``***``; other parameters are kept as written;
    - the fragment is dropped (it is never sent to a server, and may carry an ``access_token``).

    A URL without credentials or fragment comes back unchanged, character for character (so a
    finding's fingerprint, which includes its endpoint, does not change). Idempotent. A string
    that does not parse as a URL has its ``scheme://…@`` userinfo and secret ``name=value``
    pairs masked by pattern. ``None`` (no URL) is returned as it is.
    """
    if url is None:
        return None
    parts = _split(url)
    if parts is None:
        masked = _USERINFO.sub(_mask_userinfo, url)
        return _PAIR.sub(
            lambda p: p.group("head") + MASK if is_secret_name(unquote_plus(p.group("name"))) else p.group(0),
            masked,
        )
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:{MASK}@{hostport}"
        elif not colon and user and parts.scheme.lower() in _TOKEN_USER_SCHEMES:
            netloc = f"{MASK}@{hostport}"
    query = _mask_pairs(parts.query)
    if netloc == parts.netloc and query == parts.query and not parts.fragment and "#" not in url:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


__all__ = ["MASK", "is_secret_name", "redact_text", "redact_url", "url_secrets"]
