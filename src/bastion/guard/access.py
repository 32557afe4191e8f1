"""Control 1 — access: scoped API keys, hashed at rest, compared in constant time; fails closed.

A key is presented as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are
stored as ``(salt, HMAC-SHA-256(salt, key))``; a presented key is hashed under every
candidate's salt and compared with :func:`hmac.compare_digest`. The key's ``id`` (not the
secret) appears in logs, metrics and the audit log. Any exception while deciding denies.
"""

from __future__ import annotations

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


def new_key(key_id: str, models: list[str] | None = None) -> tuple[str, KeySpec]:
    """A fresh random key and the :class:`KeySpec` to put in ``guard.yaml`` (salt + hash only).

    Returns:
        ``(secret, spec)``: give ``secret`` to the client once; store only ``spec``.
    """
    secret = "bk_" + secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return secret, KeySpec(id=key_id, salt=salt, hash=hash_key(secret, salt), models=models or ["*"])


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
        # In memory only: SHA-256 of a key already verified against its salted HMAC → key id, so a
        # known key costs one hash instead of one HMAC per configured key. Bounded; never persisted.
        self._verified: dict[bytes, str] = {}
        self._cache_max = max(64, 4 * len(keys))

    def spec(self, key_id: str) -> KeySpec:
        """The spec of a key id."""
        return self._by_id[key_id]

    def _match(self, presented: str) -> KeySpec | None:
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        kid = self._verified.get(digest)
        if kid is not None:
            return self._by_id[kid]
        found: KeySpec | None = None
        for spec in self._keys:  # every key is hashed and compared: no early exit on a match
            if hmac.compare_digest(hash_key(presented, spec.salt), spec.hash) and found is None:
                found = spec
        if found is not None:
            if len(self._verified) >= self._cache_max:
                self._verified.clear()
            self._verified[digest] = found.id
        return found

    def check(self, headers: dict[str, str], model: str) -> AccessDecision:
        """Decide for a request's headers (lower-case names) and the model it calls.

        Never raises: an internal error denies with 503 (fail closed).
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
            if "*" not in spec.models and model not in spec.models:
                return AccessDecision(403, spec.id, f"key may not call model {model!r}")
            return AccessDecision(200, spec.id, "ok")
        except Exception as exc:  # fail closed
            log.error("access check failed (%s); denying", type(exc).__name__)
            return AccessDecision(503, None, "access check failed")


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
