"""Control 9 (readiness) — the upstream's health, probed for ``/readyz`` in reverse-proxy mode.

A guard in front of a model server is ready only when that server is: with ``upstream.ready_url``
set (e.g. KServe/Triton ``/v2/health/ready``, MLflow ``/ping``), ``/readyz`` GETs it and reports
not ready (503) unless it answers 2xx. The answer is cached for ``ready_interval`` seconds, so
an orchestrator polling every pod often does not multiply the load on the model server, and
only one probe is in flight at a time (other callers get the last result).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bastion.core.errors import require


class UpstreamProbe:
    """GETs an upstream health URL at most once per ``interval`` seconds; thread-safe.

    Args:
        url: the health endpoint (``http://`` or ``https://``).
        interval: seconds a result is reused.
        timeout: seconds per probe (connect and read).
        headers: request headers (a bearer token); never logged or reported.
        clock: monotonic seconds (injected in tests).
        client: an ``httpx.Client`` to use (tests); one is created otherwise.

    Raises:
        MissingExtraError: httpx is not installed (extra ``guard``).
    """

    def __init__(
        self,
        url: str,
        *,
        interval: float = 5.0,
        timeout: float = 2.0,
        headers: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        client: Any | None = None,
    ) -> None:
        self._httpx = require("httpx", "guard")
        self.url = url
        self.interval = float(interval)
        self.timeout = float(timeout)
        self._headers = dict(headers or {})
        self._clock = clock
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()  # one probe in flight
        self._last: dict[str, Any] | None = None
        self._at = 0.0
        self.probes = 0

    def check(self) -> dict[str, Any]:
        """``{"ok", "status", "reason", "age_s"}`` of the latest probe (probing if stale).

        ``status`` is the HTTP status (``None`` when the server could not be reached); ``reason``
        says why it is not ok in a few words (never the answer's body). Never raises.
        """
        now = self._clock()
        last = self._last
        if last is None or now - self._at >= self.interval:
            if self._lock.acquire(blocking=last is None):  # someone else probing: use the last result
                try:
                    if self._last is None or self._clock() - self._at >= self.interval:
                        self._last, self._at = self._probe(), self._clock()
                finally:
                    self._lock.release()
            last = self._last
        assert last is not None
        return {**last, "age_s": round(max(0.0, self._clock() - self._at), 3)}

    def _probe(self) -> dict[str, Any]:
        self.probes += 1
        httpx = self._httpx
        status: int | None = None
        from bastion.targets._deadline import deadline, install

        try:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
                install(self._client)  # ``timeout`` bounds the whole probe, a dripped answer included
            with deadline(time.monotonic() + self.timeout):
                status = int(
                    self._client.get(self.url, headers=self._headers, timeout=self.timeout).status_code
                )
            ok = 200 <= status < 300
            reason = "ok" if ok else f"answered HTTP {status}"
        except httpx.TimeoutException:
            ok, reason = False, f"timed out ({self.timeout:g} s)"
        except Exception as exc:  # unreachable, refused, bad TLS: not ready, whatever the cause
            ok, reason = False, f"unreachable ({type(exc).__name__})"
        return {"ok": ok, "status": status, "reason": reason}  # never the URL: /readyz needs no key

    def close(self) -> None:
        """Close the HTTP client this probe created."""
        if self._client is not None and self._own_client:
            self._client.close()
