"""Control 1 — access: scoped API keys, hashed at rest, compared in constant time; fails closed.

A key is presented as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are
stored as ``(salt, HMAC-SHA-256(salt, key))``; a presented key is hashed under every
candidate's salt and compared with :func:`hmac.compare_digest`. The key's ``id`` (not the
secret) appears in logs, metrics and the audit log. Any exception while deciding denies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from bastion.guard.config import KeySpec

log = logging.getLogger(__name__)

#: Longest key accepted (longer → denied without hashing).
MAX_KEY_LEN = 256


def hash_key(key: str, salt: str) -> str:
    """HMAC-SHA-256 of ``key`` under the hex ``salt`` (hex digest)."""
    return hmac.new(bytes.fromhex(salt), key.encode("utf-8"), hashlib.sha256).hexdigest()


def new_key(
    key_id: str, models: list[str] | None = None, *, expires: dt.datetime | None = None
) -> tuple[str, KeySpec]:
    """A fresh random key and the :class:`KeySpec` to put in ``guard.yaml`` (salt + hash only).

    Args:
        key_id: the key's public id.
        models: model names it may call (default all).
        expires: when it stops working (timezone-aware); ``None``: never.

    Returns:
        ``(secret, spec)``: give ``secret`` to the client once; store only ``spec``.

    Raises:
        ValueError: a bad id or model list, or ``expires`` without a timezone.
    """
    from pydantic import ValidationError

    secret = "bk_" + secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    try:
        spec = KeySpec(
            id=key_id,
            salt=salt,
            hash=hash_key(secret, salt),
            models=models or ["*"],
            expires=expires,
            lookup=lookup_tag(secret),
        )
    except ValidationError as exc:  # one line naming the field, not pydantic's report
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "key"
        field = {"id": f"key id {key_id!r}"}.get(where, where)
        raise ValueError(f"{field}: {first.get('msg', 'invalid')}") from None
    return secret, spec


def lookup_tag(key: str) -> str:
    """The first 8 hex digits of SHA-256(key): where to look for a key, not a way to check it.

    32 bits of a hash of a 256-bit random secret say nothing useful about the secret; they let
    the guard try only the keys with this tag (the salted HMAC still decides), so an unknown key
    costs one hash, not one HMAC per configured key.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


@dataclass(frozen=True)
class AccessDecision:
    """The outcome of an access check: ``status`` 200 (allowed), 401, 403 or 503."""

    status: int
    key_id: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        """Whether the request may go on."""
        return self.status == 200


class AccessControl:
    """Checks a presented key and its right to call a model.

    Args:
        keys: the configured keys (salted hashes).
    """

    def __init__(self, keys: list[KeySpec]) -> None:
        self._keys = list(keys)
        self._by_id = {k.id: k for k in keys}
        self._expires = {k.id: k.expires.timestamp() for k in keys if k.expires is not None}
        # the allowed decision of each key, built once (frozen: one object serves every request)
        self._allowed = {k.id: AccessDecision(200, k.id, "ok") for k in keys}
        # In memory only: SHA-256 of a key already verified against its salted HMAC → key id, so a
        # known key costs one hash instead of one HMAC per configured key. Bounded; never persisted.
        self._verified: dict[bytes, str] = {}
        self._cache_max = max(64, 4 * len(keys))
        # keys made with a lookup tag are tried only when the tag matches; older keys always
        self._tagged: dict[str, list[KeySpec]] = {}
        for k in keys:
            if k.lookup is not None:
                self._tagged.setdefault(k.lookup, []).append(k)
        self._untagged = [k for k in keys if k.lookup is None]

    def spec(self, key_id: str) -> KeySpec:
        """The spec of a key id."""
        return self._by_id[key_id]

    def _match(self, presented: str) -> KeySpec | None:
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        kid = self._verified.get(digest)
        if kid is not None:
            return self._by_id[kid]
        found: KeySpec | None = None
        candidates = self._tagged.get(digest[:4].hex(), []) + self._untagged
        for spec in candidates:  # every candidate is hashed and compared: no early exit on a match
            if hmac.compare_digest(hash_key(presented, spec.salt), spec.hash) and found is None:
                found = spec
        if found is not None:
            if len(self._verified) >= self._cache_max:
                self._verified.clear()
            self._verified[digest] = found.id
        return found

    def expired(self, now: float) -> list[str]:
        """Ids of the keys whose expiry (``expires``) is at or before ``now`` (seconds since the epoch)."""
        return sorted(k for k, t in self._expires.items() if now >= t)

    def check(self, headers: dict[str, str], model: str, now: float | None = None) -> AccessDecision:
        """Decide for a request's headers (lower-case names) and the model it calls at ``now``.

        ``now`` (seconds since the epoch) is needed to refuse an expired key; ``None`` skips
        expiry. Never raises: an internal error denies with 503 (fail closed).
        """
        try:
            presented = extract_key(headers)
            if presented is None:
                return AccessDecision(401, None, "missing API key")
            if len(presented) > MAX_KEY_LEN:
                return AccessDecision(401, None, "invalid API key")
            spec = self._match(presented)
            if spec is None:
                return AccessDecision(401, None, "invalid API key")
            expiry = self._expires.get(spec.id)
            if expiry is not None and now is not None and now >= expiry:
                return AccessDecision(401, spec.id, "API key expired")
            if "*" not in spec.models and model not in spec.models:
                return AccessDecision(403, spec.id, f"key may not call model {model!r}")
            return self._allowed[spec.id]
        except Exception as exc:  # fail closed
            log.error("access check failed (%s); denying", type(exc).__name__)
            return AccessDecision(503, None, "access check failed")


#: the (lower-case) header names :func:`extract_key` reads, as an ASGI server gives them
KEY_HEADERS = frozenset({b"authorization", b"x-api-key"})


def extract_key(headers: dict[str, str]) -> str | None:
    """The presented key from ``Authorization: Bearer`` or ``X-API-Key`` (``None`` if absent)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None
