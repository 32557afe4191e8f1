"""A total deadline for an HTTP call: every socket wait of the call ends by it.

httpx's timeouts bound each connect, read or write, not the call: an upstream that drips its
status line, headers or a chunk terminator a byte at a time holds a call for as long as it likes
(red-team rounds 18 and 21: 19.6 s under a 2 s timeout, then a 200). Here the connection pool's
network backend wraps each socket stream so that every read and write waits at most until the
calling thread's deadline (:func:`deadline`), then fails with ``httpcore.ReadTimeout`` (httpx's
``ReadTimeout``). Imported only when an HTTP target builds its client (httpx is an extra).
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing
from collections.abc import Iterator

import httpcore

__all__ = ["deadline", "install"]

_CALL = threading.local()


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Bound every socket wait of this thread's calls, inside the block, by ``time.monotonic() == at``."""
    before = getattr(_CALL, "at", None)
    _CALL.at = at
    try:
        yield
    finally:
        _CALL.at = before


def _left(timeout: float | None) -> float | None:
    at = getattr(_CALL, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the call's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: typing.Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout), local_address, socket_options))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(client: typing.Any) -> int:
    """Make an ``httpx.Client``'s transports honour :func:`deadline`; how many it could.

    Environment proxies' transports included.
    httpx does not expose a pool's network backend, so this sets it on the pools it built
    (``Client._transport``, ``Client._mounts``, httpcore ``ConnectionPool._network_backend``;
    versions pinned in ``constraints.txt``; a test fails if that changes).
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    done = 0
    for t in transports:
        pool = getattr(t, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if pool is None or inner is None:
            continue
        if not isinstance(inner, _Backend):
            pool._network_backend = _Backend(inner)
        done += 1
    return done
