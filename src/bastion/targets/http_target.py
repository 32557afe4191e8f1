"""A remote model behind an HTTP JSON endpoint, as a black-box, query-limited :class:`Target`.

Wire formats (``wire``):

* ``default``: ``POST {"instances": [[...], ...]}`` → ``{"predictions": [...]}`` (keys set by
  ``request_key`` / ``response_key``), one prediction per instance: a row of probabilities or
  logits, or a label;
* ``rows``: the body is the JSON list of rows itself → a JSON list of predictions;
* ``kserve-v2`` (KServe v2 / Open Inference Protocol):
  ``{"inputs": [{"name", "shape": [n, *input_shape], "datatype": "FP32", "data": [...]}]}`` →
  ``{"outputs": [{"name", "shape": [n, K], "datatype", "data": [...]}]}`` (the first output,
  flat row-major data or nested rows).

Requests of ``max_batch`` rows are sent ``concurrency`` at a time from a thread pool, no more
than ``rate_limit`` requests per second; a 429 answer's ``Retry-After`` (seconds) is honoured
before the retry. httpx is imported lazily (extra ``guard``).

Request path (cheap per row): the JSON body is written in one C-level ``%`` format of the
float32 values with 9 significant digits (``%.9g``, enough to round-trip every float32 exactly,
and half the bytes of ``json.dumps`` of the float64 repr); one ``httpx.Client`` with keep-alive
(HTTP/1.1) and one persistent thread pool are reused; answers are parsed with ``json.loads``
and, when they are a plain ``(n, K)`` list of numbers, converted by numpy in one step (the
per-value validation runs only when that fast path fails).

Secrets: header values (a bearer token) are used only to build requests; they never
appear in messages, logs, ``repr`` or :meth:`describe`. Inputs are never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np

from bastion.core.capability import Capability
from bastion.core.errors import ConfigError, TargetError
from bastion.core.redact import redact_url as redact_url  # re-exported: the one URL redactor
from bastion.targets._util import import_extra, softmax
from bastion.targets.base import Target

log = logging.getLogger(__name__)

HttpOutput = Literal["probabilities", "logits", "labels"]
HttpWire = Literal["default", "rows", "kserve-v2"]
#: The longest ``Retry-After`` honoured, in seconds (a longer one fails the request).
MAX_RETRY_AFTER = 60.0
_PROB_TOL = 1e-3
#: With ``concurrency > 1`` a call is split into requests of at least this many rows.
MIN_SPLIT_ROWS = 32
#: Default cap on one answer's body, in bytes (256 rows of 1,000 classes at ~25 bytes a number fit).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class HttpTarget(Target):
    """A classifier served over HTTP, queried under a budget (black-box).

    Each input row actually sent counts as one query. Rows are sent in requests of at
    most ``max_batch`` rows. Exact repeats (same float32 bytes) are answered from a
    cache and are neither re-sent nor re-charged; duplicates within one call are sent
    once. The whole call is charged before anything is sent, so ``BudgetExhausted`` is
    raised with nothing spent past the budget. Server errors (5xx, 429) and connection
    failures are retried ``max_retries`` times with exponential backoff; other 4xx
    answers fail at once. Rows charged for a request that finally fails stay charged (the
    server may have seen them). Safe to call from several threads at once (the guard's proxy mode
    does): the cache, counters and budget are locked; requests go out in parallel.

    Threat model: black-box (an attacker with an API key and a query budget).

    Args:
        url: the endpoint (``http://`` or ``https://``).
        name: asset name.
        input_shape: one sample's shape.
        num_classes: number of classes.
        output: what the endpoint returns per row: ``probabilities``, ``logits`` or ``labels``.
            A binary endpoint may return one number per row (positive-class probability/logit).
        request_key: JSON key the inputs go under.
        response_key: JSON key the predictions come back under.
        headers: extra request headers with their values already resolved (e.g.
            ``{"Authorization": "Bearer …"}``); never logged.
        timeout: seconds per request.
        max_batch: rows per request (``None``: 256 for a probability/logit endpoint, 64 for
            a label endpoint).
        max_retries: retries after a 5xx/429 answer or a connection error.
        backoff: seconds before the first retry; doubles each retry.
        cache_size: rows kept in the answer cache (0 disables it).
        client: an ``httpx.Client`` to use instead of creating one (e.g. a FastAPI
            ``TestClient``); not closed by :meth:`close`.
        wire: the request/response template: ``default``, ``rows`` or ``kserve-v2``.
        concurrency: requests in flight at once (a thread pool; 1: sequential). Above 1, a
            call's rows are split evenly over the workers (at least ``MIN_SPLIT_ROWS`` rows
            per request, at most ``max_batch``).
        rate_limit: most requests started per second (``None``: unlimited).
        input_name: the tensor name sent in a ``kserve-v2`` request.
        max_response_bytes: the most bytes of one answer's body that are read; a longer answer
            (by its ``Content-Length`` or by what arrives) is abandoned unread past the cap and
            fails the request with ``TargetError`` (never retried: a server that answers too much
            will do it again), so a broken or hostile endpoint cannot exhaust memory.
        max_connections: connections to the endpoint open at once (default ``concurrency``); a
            caller that queries from many threads at once (the guard's proxy mode) needs one per
            thread, or its requests wait for a free connection.

    Capabilities:
        ``PROBABILITIES`` (+ ``LOGITS`` for a logits endpoint) or ``LABEL_ONLY``; always
        ``BATCHED`` and ``QUERY_LIMITED``.

    Raises:
        ConfigError: a bad url or setting.
        MissingExtraError: httpx is not installed.
    """

    kind: ClassVar[str] = "http"

    def __init__(
        self,
        url: str,
        *,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        output: HttpOutput = "probabilities",
        request_key: str = "instances",
        response_key: str = "predictions",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        max_batch: int | None = None,
        max_retries: int = 2,
        backoff: float = 0.5,
        cache_size: int = 100_000,
        client: Any | None = None,
        wire: HttpWire = "default",
        concurrency: int = 1,
        rate_limit: float | None = None,
        input_name: str = "input-0",
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_connections: int | None = None,
    ) -> None:
        problems = []
        if wire not in ("default", "rows", "kserve-v2"):
            problems.append(f"wire: must be 'default', 'rows' or 'kserve-v2', got {wire!r}")
        if concurrency < 1:
            problems.append(f"concurrency: must be at least 1, got {concurrency}")
        if rate_limit is not None and not rate_limit > 0:
            problems.append(f"rate_limit: must be positive requests per second, got {rate_limit}")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append("url: must start with http:// or https://")
        if output not in ("probabilities", "logits", "labels"):
            problems.append(f"output: must be 'probabilities', 'logits' or 'labels', got {output!r}")
        if not (timeout > 0):
            problems.append(f"timeout: must be positive, got {timeout}")
        if max_batch is None:
            max_batch = 64 if output == "labels" else 256
        if max_batch < 1:
            problems.append(f"max_batch: must be at least 1, got {max_batch}")
        if max_retries < 0:
            problems.append(f"max_retries: must be at least 0, got {max_retries}")
        if backoff < 0:
            problems.append(f"backoff: must be at least 0, got {backoff}")
        if cache_size < 0:
            problems.append(f"cache_size: must be at least 0, got {cache_size}")
        if max_response_bytes < 1:
            problems.append(f"max_response_bytes: must be at least 1, got {max_response_bytes}")
        if max_connections is not None and max_connections < 1:
            problems.append(f"max_connections: must be at least 1, got {max_connections}")
        if problems:
            raise ConfigError(f"{name}: invalid HTTP target settings", problems)
        self._httpx = import_extra("httpx", "guard")
        caps = {Capability.BATCHED, Capability.QUERY_LIMITED}
        if output == "labels":
            caps.add(Capability.LABEL_ONLY)
        else:
            caps.add(Capability.PROBABILITIES)
            if output == "logits":
                caps.add(Capability.LOGITS)
        super().__init__(
            name=name, input_shape=tuple(input_shape), num_classes=num_classes, capabilities=frozenset(caps)
        )
        self.url = url
        self.endpoint = redact_url(url)
        self.output: HttpOutput = output
        self.request_key = request_key
        self.response_key = response_key
        self.timeout = float(timeout)
        self.max_batch = int(max_batch)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.cache_size = int(cache_size)
        self._headers = dict(headers or {})
        self._client = client
        self._own_client = client is None
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.wire: HttpWire = wire
        self.concurrency = int(concurrency)
        self.rate_limit = None if rate_limit is None else float(rate_limit)
        self.input_name = input_name
        self.max_response_bytes = int(max_response_bytes)
        self.max_connections = int(max_connections) if max_connections is not None else self.concurrency
        self._lock = threading.Lock()
        #: Guards the cache, the counters and the budget: the guard's proxy mode calls one target
        #: from several request threads at once.
        self._state_lock = threading.Lock()
        self._next_slot = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._row_templates: dict[tuple[int, ...], str] = {}
        #: Requests sent (including retries) and rows answered from the cache.
        self.requests = 0
        self.cache_hits = 0

    def __repr__(self) -> str:
        return f"HttpTarget(name={self.name!r}, endpoint={self.endpoint!r}, output={self.output!r})"

    def describe(self) -> dict[str, Any]:
        """Base summary plus the redacted endpoint and wire format (no header values)."""
        d = super().describe()
        d.update(
            endpoint=self.endpoint,
            output=self.output,
            request_key=self.request_key,
            response_key=self.response_key,
            max_batch=self.max_batch,
            wire=self.wire,
            concurrency=self.concurrency,
            rate_limit=self.rate_limit,
        )
        return d

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP client this target created (a client passed in is left open)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get_client(self) -> Any:
        with self._state_lock:
            return self._client_locked()

    def _client_locked(self) -> Any:
        if self._client is None:
            httpx = self._httpx
            limits = httpx.Limits(
                max_connections=max(self.max_connections, 1),
                max_keepalive_connections=max(self.max_connections, 1),
                keepalive_expiry=30.0,
            )
            from bastion.targets._deadline import install

            self._client = httpx.Client(timeout=self.timeout, headers=self._headers, limits=limits)
            install(self._client)  # ``timeout`` bounds the whole call (see :meth:`_post`)
            self._own_client = True
        return self._client

    # -- public API: charge only rows actually sent ---------------------------------------
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, num_classes)``; repeats come from the cache, uncharged.

        Raises:
            TargetError: a label-only endpoint, a wrong input shape, an HTTP failure or a
                malformed answer.
            BudgetExhausted: the uncached rows would pass the bound meter's query budget
                (nothing is sent then).
        """
        self._need(Capability.PROBABILITIES)
        raw = self._query(self._check(x))
        return softmax(raw) if self.output == "logits" else raw

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Raw scores ``(N, num_classes)`` from a logits endpoint.

        Raises:
            TargetError: the endpoint does not return logits, or see :meth:`predict_proba`.
            BudgetExhausted: as :meth:`predict_proba`.
        """
        self._need(Capability.LOGITS)
        return self._query(self._check(x))

    def predict_label(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``(N,)`` int64.

        Raises:
            TargetError: see :meth:`predict_proba`.
            BudgetExhausted: as :meth:`predict_proba`.
        """
        raw = self._query(self._check(x))
        if self.output == "labels":
            return raw.astype(np.int64)
        return np.asarray(raw.argmax(axis=1), dtype=np.int64)

    # -- querying -------------------------------------------------------------------------
    def _query(self, x: np.ndarray) -> np.ndarray:
        """Answers for every row of ``x`` (float32), sending only uncached unique rows."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x]
        results: list[np.ndarray | None] = [None] * n
        pending: dict[bytes, list[int]] = {}
        with self._state_lock:
            for i, k in enumerate(keys):
                hit = self._cache.get(k) if self.cache_size else None
                if hit is not None:
                    self._cache.move_to_end(k)
                    results[i] = hit
                    self.cache_hits += 1
                else:
                    pending.setdefault(k, []).append(i)
            self.cache_hits += sum(len(v) - 1 for v in pending.values())
            order = list(pending)
            if order:
                self._charge(len(order))  # before sending: raises BudgetExhausted with nothing spent
        if order:
            rows = x[[pending[k][0] for k in order]]
            size = self._rows_per_request(len(order))
            starts = list(range(0, len(order), size))
            chunks = [rows[s : s + size] for s in starts]
            if self.concurrency > 1 and len(chunks) > 1:
                with self._state_lock:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=self.concurrency)
                    pool = self._pool
                all_answers = list(pool.map(self._send, chunks))
            else:
                all_answers = [self._send(c) for c in chunks]
            for start, answers in zip(starts, all_answers, strict=True):
                for j, k in enumerate(order[start : start + size]):
                    ans = answers[j]
                    for i in pending[k]:
                        results[i] = ans
                    self._remember(k, ans)
        if self.output == "labels":
            return np.array([int(r[0]) for r in results if r is not None], dtype=np.int64).reshape(n)
        if n == 0:
            return np.zeros((0, self.num_classes), dtype=np.float64)
        return np.stack([r for r in results if r is not None]).astype(np.float64)

    def _rows_per_request(self, n: int) -> int:
        """Rows per request for a call of ``n`` rows.

        ``max_batch``, or with ``concurrency > 1`` an even split over the workers (never under
        ``MIN_SPLIT_ROWS``), so that encoding one request overlaps the server's work on another.
        """
        if self.concurrency <= 1:
            return self.max_batch
        return min(self.max_batch, max(MIN_SPLIT_ROWS, -(-n // self.concurrency)))

    def _remember(self, key: bytes, value: np.ndarray) -> None:
        if not self.cache_size:
            return
        with self._state_lock:
            self._cache[key] = value
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget cached answers (the next repeats are sent and charged again)."""
        with self._state_lock:
            self._cache.clear()

    def _send(self, chunk: np.ndarray) -> np.ndarray:
        """POST one request, with retries; parsed answers ``(len(chunk), C)`` or ``(len(chunk), 1)``."""
        httpx = self._httpx
        client = self._get_client()
        body = self._encode(chunk)
        attempts = self.max_retries + 1
        last = ""
        wait_after = 0.0
        for attempt in range(attempts):
            if attempt:
                time.sleep(max(self.backoff * (2 ** (attempt - 1)), wait_after))
            self._throttle()
            with self._lock:
                self.requests += 1
            try:
                resp, content = self._post(client, body)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.TimeoutException):
                    last = f"timed out ({type(exc).__name__}, timeout {self.timeout:g} s)"
                else:
                    last = f"was unreachable ({type(exc).__name__})"
                log.warning(
                    "%s: POST %s failed (%s), attempt %d/%d",
                    self.name,
                    self.endpoint,
                    type(exc).__name__,
                    attempt + 1,
                    attempts,
                )
                continue
            status = int(resp.status_code)
            log.debug("%s: POST %s rows=%d status=%d", self.name, self.endpoint, len(chunk), status)
            if status >= 500 or status == 429:
                last = f"answered HTTP {status}"
                wait_after = _retry_after(resp) if status == 429 else 0.0
                if wait_after > MAX_RETRY_AFTER:
                    raise TargetError(
                        f"{self.name}: endpoint {self.endpoint} is rate-limiting (HTTP 429, Retry-After "
                        f"{wait_after:g} s, more than {MAX_RETRY_AFTER:g} s); lower endpoint.rate_limit"
                    )
                log.warning(
                    "%s: %s answered HTTP %d, attempt %d/%d",
                    self.name,
                    self.endpoint,
                    status,
                    attempt + 1,
                    attempts,
                )
                continue
            if status >= 400:
                reason = getattr(resp, "reason_phrase", "") or ""
                hint = " (check the token / headers)" if status in (401, 403) else ""
                raise TargetError(
                    f"{self.name}: endpoint {self.endpoint} answered HTTP {status} {reason}".rstrip() + hint
                )
            if status >= 300:
                raise TargetError(f"{self.name}: endpoint {self.endpoint} answered HTTP {status} (redirect)")
            if content is None:
                raise TargetError(
                    f"{self.name}: endpoint {self.endpoint} answered more than {self.max_response_bytes} "
                    "bytes (max_response_bytes); the answer was not read"
                )
            return self._parse(content, len(chunk))
        raise TargetError(f"{self.name}: endpoint {self.endpoint} {last} after {attempts} attempt(s)")

    def _post(self, client: Any, body: bytes) -> tuple[Any, bytes | None]:
        """POST ``body``; the response and its body, or ``None`` for a 2xx body over the cap.

        The body is read as it streams and abandoned once it passes ``max_response_bytes``
        (or at once when ``Content-Length`` says it will); error answers are not read. ``timeout``
        bounds the whole call, not only each read: every socket wait of the call ends by its
        deadline (:mod:`bastion.targets._deadline`, on the client this target builds), so an
        upstream dripping its status line, headers, body or chunk terminator a byte at a time
        raises ``httpx.ReadTimeout`` once it is spent (a backend failure, like any timeout); with
        a client passed in, the deadline is checked between chunks and once the body is complete.
        """
        import httpx

        from bastion.targets._deadline import deadline as call_deadline

        cap = self.max_response_bytes
        deadline = time.monotonic() + self.timeout
        req = {"content": body, "headers": _JSON_HEADERS, "timeout": self.timeout}
        with call_deadline(deadline), client.stream("POST", self.url, **req) as resp:
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"no answer within {self.timeout:g} s")
            if not 200 <= int(resp.status_code) < 300:
                return resp, b""
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                return resp, None
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > cap:
                    return resp, None
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"answer not complete within {self.timeout:g} s")
                chunks.append(chunk)
            if time.monotonic() > deadline:  # the last wait may have been for no data (a terminator)
                raise httpx.ReadTimeout(f"answer not complete within {self.timeout:g} s")
            return resp, b"".join(chunks)

    def _throttle(self) -> None:
        """Wait for this request's slot under ``rate_limit`` (shared by the pool's threads)."""
        if self.rate_limit is None:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate_limit
        if slot > now:
            time.sleep(slot - now)

    def _encode(self, chunk: np.ndarray) -> bytes:
        """The request body for ``chunk`` as JSON bytes (fast path for finite float32 rows)."""
        if not np.all(np.isfinite(chunk)):
            return json.dumps(self._payload(chunk)).encode()
        n = len(chunk)
        values = tuple(chunk.reshape(-1).tolist())
        if self.wire == "kserve-v2":
            meta = {"name": self.input_name, "shape": [n, *self.input_shape], "datatype": "FP32"}
            head = json.dumps(meta)[:-1]
            flat = ",".join(["%.9g"] * len(values)) % values if values else ""
            return ('{"inputs": [' + head + ', "data": [' + flat + "]}]}").encode()
        row = self._row_template(tuple(chunk.shape[1:]))
        rows = ("[" + ",".join([row] * n) + "]") % values if n else "[]"
        if self.wire == "rows":
            return rows.encode()
        return ("{" + json.dumps(self.request_key) + ": " + rows + "}").encode()

    def _row_template(self, shape: tuple[int, ...]) -> str:
        """A ``%``-format template writing one row of ``shape`` as nested JSON lists."""
        tpl = self._row_templates.get(shape)
        if tpl is None:
            tpl = "%.9g"
            for dim in reversed(shape):
                tpl = "[" + ",".join([tpl] * dim) + "]"
            self._row_templates[shape] = tpl
        return tpl

    def _payload(self, chunk: np.ndarray) -> Any:
        """The request body for ``chunk`` under the wire format."""
        if self.wire == "rows":
            return chunk.tolist()
        if self.wire == "kserve-v2":
            return {
                "inputs": [
                    {
                        "name": self.input_name,
                        "shape": [len(chunk), *self.input_shape],
                        "datatype": "FP32",
                        "data": chunk.reshape(-1).tolist(),
                    }
                ]
            }
        return {self.request_key: chunk.tolist()}

    def _predictions(self, body: Any, n: int, where: str) -> Any:
        """The per-row predictions list out of a response body, per the wire format."""
        if self.wire == "rows":
            return body
        if self.wire == "kserve-v2":
            outs = body.get("outputs") if isinstance(body, dict) else None
            if not isinstance(outs, list) or not outs or not isinstance(outs[0], dict):
                raise TargetError(f"{where}: the answer has no 'outputs' list (KServe v2)")
            data = outs[0].get("data")
            shape = outs[0].get("shape")
            if not isinstance(data, list):
                raise TargetError(f"{where}: outputs[0].data is not a list (KServe v2)")
            if data and not isinstance(data[0], list) and isinstance(shape, list) and len(shape) == 2:
                width = shape[1]
                if not isinstance(width, int) or width < 1 or len(data) != n * width:
                    raise TargetError(f"{where}: outputs[0] shape {shape} does not fit {len(data)} values")
                return [data[i * width : (i + 1) * width] for i in range(n)]
            return data
        if not isinstance(body, dict) or self.response_key not in body:
            raise TargetError(f"{where}: the answer has no {self.response_key!r} key")
        return body[self.response_key]

    def _parse(self, content: bytes, n: int) -> np.ndarray:
        """Validate a response body; never echoes its content (it may hold inputs)."""
        where = f"{self.name}: endpoint {self.endpoint}"
        try:
            body = json.loads(content)
        except ValueError:
            raise TargetError(f"{where} did not answer JSON") from None
        preds = self._predictions(body, n, where)
        if not isinstance(preds, list):
            raise TargetError(f"{where}: the predictions are a {type(preds).__name__}, expected a list")
        if len(preds) != n:
            raise TargetError(f"{where} returned {len(preds)} predictions for {n} inputs")
        if self.output == "labels":
            return self._parse_labels(preds, where)
        kind = body.get("output") if isinstance(body, dict) else None
        if kind in ("label", "round") and not (preds and isinstance(preds[0], list)):
            # a Bastion guard (or a server like it) answering this key with labels only: it was
            # flagged and hardened; say so rather than "not a list of numbers" (new-user trial)
            raise TargetError(
                f'{where} answered labels only ("output": {kind!r}): the server hardened this '
                "client's answers (a guard that flagged the key); assess it with output: labels, "
                "or with a key the guard exempts from extraction detection"
            )
        return self._parse_scores(preds, where)

    def _parse_labels(self, preds: list[Any], where: str) -> np.ndarray:
        out = np.empty((len(preds), 1), dtype=np.float64)
        for i, p in enumerate(preds):
            if isinstance(p, list) and len(p) == 1:
                p = p[0]
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not float(p).is_integer():
                raise TargetError(f"{where}: prediction {i} is not an integer label")
            if not 0 <= int(p) < self.num_classes:
                raise TargetError(f"{where}: label {int(p)} is outside [0, {self.num_classes})")
            out[i, 0] = int(p)
        return out

    def _parse_scores(self, preds: list[Any], where: str) -> np.ndarray:
        c = self.num_classes
        out = _fast_scores(preds, c)
        if out is None:
            out = self._parse_scores_slow(preds, where)
        return self._check_scores(out, where)

    def _parse_scores_slow(self, preds: list[Any], where: str) -> np.ndarray:
        c = self.num_classes
        out = np.empty((len(preds), c), dtype=np.float64)
        for i, p in enumerate(preds):
            row = [p] if (c == 2 and _is_number(p)) else p
            if not isinstance(row, list) or not all(_is_number(v) for v in row):
                raise TargetError(f"{where}: prediction {i} is not a list of numbers")
            if len(row) == 1 and c == 2:
                v = float(row[0])
                row = [0.0, v] if self.output == "logits" else [1.0 - v, v]
            if len(row) != c:
                raise TargetError(f"{where}: prediction {i} has {len(row)} values, expected {c}")
            out[i] = row
        return out

    def _check_scores(self, out: np.ndarray, where: str) -> np.ndarray:
        if not np.all(np.isfinite(out)):
            raise TargetError(f"{where}: predictions hold NaN or infinity")
        if self.output == "probabilities" and len(out):
            sums = out.sum(axis=1)
            bad = (
                (np.abs(sums - 1.0) > _PROB_TOL)
                | np.any(out < -_PROB_TOL, axis=1)
                | np.any(out > 1 + _PROB_TOL, axis=1)
            )
            if np.any(bad):
                first = int(np.argmax(bad))
                raise TargetError(
                    f"{where}: prediction {first} is not a probability vector (sums to {sums[first]:.4g}); "
                    "looks like logits passed as probabilities (set output: logits)"
                )
            out = np.clip(out, 0.0, None)
            out /= out.sum(axis=1, keepdims=True)
        return out


_JSON_HEADERS = {"content-type": "application/json"}


def _fast_scores(preds: list[Any], c: int) -> np.ndarray | None:
    """``preds`` as a float64 ``(n, c)`` array when it is plainly one, else ``None``.

    Only a list of ``n`` lists of ``c`` JSON numbers (ints/floats, no booleans, strings or
    nesting) takes this path; anything else goes to the per-value validation.
    """
    try:
        arr = np.array(preds)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[1] != c or arr.dtype.kind not in "fi":
        return None
    if any(type(v) is bool for row in preds for v in row):
        return None  # numpy coerces booleans to numbers; let the slow path refuse them
    return np.asarray(arr, dtype=np.float64)


def _retry_after(resp: Any) -> float:
    """Seconds a ``Retry-After`` header asks for (0 when absent or an HTTP date)."""
    headers = getattr(resp, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
