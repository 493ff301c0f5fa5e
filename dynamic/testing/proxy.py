"""A loopback HTTP proxy in front of DynamoDB (Local): added latency and injected faults.

For tests and benchmarks of code that must survive a real network::

    with FaultProxy(ddb_local.endpoint_url, seed=7) as proxy:
        proxy.inject("UpdateItem", throttle=0.1, error500=0.05, lost=0.1)
        client = boto3.client("dynamodb", endpoint_url=proxy.url)
        ...
        assert proxy.counts["UpdateItem"]["lost"] > 0

Faults, chosen per request by operation (the ``X-Amz-Target`` header):

* ``throttle``: answer 400 ``ProvisionedThroughputExceededException`` without forwarding;
* ``error500``: answer 500 ``InternalServerError`` without forwarding;
* ``conflict``: answer 400 ``TransactionConflictException`` without forwarding (what a plain
  write meets while an application's transaction holds the item);
* ``lost``: forward the request (so it applies), read the reply, then close the connection
  without answering -- the client sees a dropped connection and retries the same request.

Decisions come from one ``random.Random`` per operation, seeded from ``seed``: the n-th Scan
meets the same fault in every run, however the threads interleave Scans with other calls. The proxy is stdlib only (``ThreadingHTTPServer`` + ``http.client`` with
keep-alive on both sides), runs on a daemon thread, and stops on ``close()``, on leaving the
``with`` block, or by itself after ``lifetime`` seconds. Run it as its own process (so it does
not share the GIL with the code under test) with::

    python -m dynamic.testing.proxy --upstream http://127.0.0.1:8000 --latency-ms 4
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "FAULTS"]

FAULTS = ("throttle", "error500", "lost", "conflict")
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"})
_BODIES = {
    "throttle": (400, "ProvisionedThroughputExceededException",
                 "The level of configured provisioned throughput for the table was exceeded (injected)"),
    "error500": (500, "InternalServerError", "Internal server error (injected)"),
    "conflict": (400, "TransactionConflictException",
                 "Transaction is ongoing for the item (injected)"),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    proxy: "FaultProxy"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _forward(self, method: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        for attempt in (0, 1):  # a kept-alive upstream connection may have been closed meanwhile
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
            try:
                self._upstream.request(method, self.path, body=body, headers=headers)
                resp = self._upstream.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            except (ConnectionError, http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.headers.get("X-Amz-Target", "")
        op = target.rsplit(".", 1)[-1] if target else self.command
        fault = proxy._decide(op)
        if proxy.latency:
            time.sleep(proxy.latency)
        if fault in _BODIES:
            status, code, message = _BODIES[fault]
            payload = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
            self._reply(status, "Injected", [("Content-Type", "application/x-amz-json-1.0"),
                                             ("x-amzn-RequestId", uuid.uuid4().hex)], payload)
            return
        try:
            status, reason, headers, data = self._forward(self.command, body)
        except Exception:  # upstream down: the client sees a dropped connection
            self.close_connection = True
            return
        if op == "TransactWriteItems":
            proxy._account(body, data)
        if fault == "lost":  # applied upstream; the reply never reaches the client
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._reply(status, reason, [(k, v) for k, v in headers if k.lower() not in _HOP and
                                     k.lower() != "content-length"], data)

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        # one write for status, headers and body: no Nagle/delayed-ACK stall between them
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {len(data)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = _handle


class FaultProxy:
    """See the module docstring. ``port=0`` picks a free port; ``url`` is where to point clients."""

    def __init__(self, upstream: str, *, latency: float = 0.0, seed: int = 0, port: int = 0,
                 lifetime: float | None = 600.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.latency = latency
        self.lifetime = lifetime
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._rates: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("requests", *FAULTS), 0))
        self.transactions: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "units": 0.0})
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, operation: str, *, throttle: float = 0.0, error500: float = 0.0, lost: float = 0.0,
               conflict: float = 0.0) -> "FaultProxy":
        """Fault rates (0..1) for one operation (``"UpdateItem"``, ``"Scan"``, ... or ``"*"``)."""
        if throttle + error500 + lost + conflict > 1:
            raise ValueError("fault rates add up to more than 1")
        with self._lock:
            self._rates[operation] = {"throttle": throttle, "error500": error500, "lost": lost,
                                      "conflict": conflict}
        return self

    def clear(self) -> None:
        """No more faults (latency stays)."""
        with self._lock:
            self._rates.clear()

    def injected(self, fault: str | None = None) -> int:
        """Faults injected so far, of one kind or all."""
        with self._lock:
            kinds = [fault] if fault else list(FAULTS)
            return sum(c[k] for c in self.counts.values() for k in kinds)

    def _account(self, request: bytes, response: bytes) -> None:
        """Transactions, told apart: dyn's checkpoint writes (they touch ``checkpoint#`` items)
        and the rest, with the write units DynamoDB reports (``ReturnConsumedCapacity``)."""
        kind = "checkpoint" if b"checkpoint#" in request else "other"
        try:
            units = sum(float(c.get("CapacityUnits") or 0)
                        for c in json.loads(response).get("ConsumedCapacity") or [])
        except ValueError:
            units = 0.0
        with self._lock:
            stats = self.transactions[kind]
            stats["calls"] += 1
            stats["units"] += units

    def stats(self) -> dict:
        """Requests and faults by operation, and transactions by kind (JSON-ready)."""
        with self._lock:
            return {"operations": {op: dict(c) for op, c in self.counts.items()},
                    "transactions": {k: dict(v) for k, v in self.transactions.items()}}

    def _decide(self, op: str) -> str | None:
        with self._lock:
            self.counts[op]["requests"] += 1
            rates = self._rates.get(op) or self._rates.get("*")
            if not rates:
                return None
            rng = self._rngs.get(op)
            if rng is None:
                rng = self._rngs[op] = random.Random(f"{self.seed}:{op}")
            r = rng.random()
            for fault in FAULTS:
                p = rates[fault]
                if r < p:
                    self.counts[op][fault] += 1
                    return fault
                r -= p
            return None

    def start(self) -> "FaultProxy":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"fault-proxy-{self.port}", daemon=True)
            self._thread.start()
            if self.lifetime:
                self._timer = threading.Timer(self.lifetime, self.close)
                self._timer.daemon = True
                self._timer.start()
        return self

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynamic.testing.proxy", description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=3600.0, help="stop by itself after this many seconds")
    p.add_argument("--fault", action="append", default=[], metavar="OP:KIND=RATE",
                   help="e.g. UpdateItem:lost=0.1 or *:throttle=0.05 (KIND: throttle, error500, lost, conflict)")
    p.add_argument("--stats", metavar="PATH", help="on exit, write request/fault counts as JSON here")
    args = p.parse_args(argv)
    proxy = FaultProxy(args.upstream, latency=args.latency_ms / 1000, seed=args.seed, port=args.port,
                       lifetime=args.lifetime)
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    for spec in args.fault:
        op, _, kv = spec.partition(":")
        kind, _, rate = kv.partition("=")
        if kind not in FAULTS:
            p.error(f"unknown fault {kind!r} in {spec!r}")
        rates[op][kind] = float(rate)
    for op, r in rates.items():
        proxy.inject(op, **r)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    proxy.start()
    print(proxy.url, flush=True)
    done.wait(args.lifetime)
    proxy.close()
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(proxy.stats(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
