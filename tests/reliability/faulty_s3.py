"""A fault-injecting HTTP proxy on 127.0.0.1 between s3fs and the moto S3 server.

Every request is forwarded to moto unchanged, unless a `FaultRule` matches it: then, instead
of (or, for `truncate`, part of) moto's answer, the client gets

- `500`: HTTP 500 InternalError, `503`: HTTP 503 ServiceUnavailable,
- `slowdown`: HTTP 503 with S3's `SlowDown` throttling error,
- `reset`: the TCP connection is reset (RST) before any response byte,
- `truncate`: moto's headers (full Content-Length) and only half of its body, then close.

A rule fails the first `times` matching requests *per path* (None: forever), so "transient"
and "permanent" faults are one rule each. `injected` counts what was done, per fault kind.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
}
FAULTS = (*_ERRORS, "reset", "truncate")


@dataclass
class FaultRule:
    """Fail requests whose method is `method` and whose path contains `path_contains`."""

    fault: str
    path_contains: str
    method: str = "GET"
    times: int | None = 1  # failures per path; None = every request (a permanent fault)
    seen: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose from {FAULTS}")

    def take(self, method: str, path: str) -> bool:
        if method != self.method or self.path_contains not in path:
            return False
        if self.times is not None and self.seen[path] >= self.times:
            return False
        self.seen[path] += 1
        return True


class FaultyS3Proxy:
    """`with FaultyS3Proxy(moto_endpoint) as proxy:` use `proxy.endpoint_url` as S3 endpoint."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.rules: list[FaultRule] = []
        self.injected: Counter = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_rules(self, *rules: FaultRule) -> None:
        with self._lock:
            self.rules = list(rules)
            self.injected.clear()

    def _fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            for rule in self.rules:
                if rule.take(method, path):
                    self.injected[rule.fault] += 1
                    return rule.fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault_for(self.command, self.path)
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault in _ERRORS:
                    status, code, message = _ERRORS[fault]
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}'
                               f"</Code><Message>{message}</Message><RequestId>fault"
                               "</RequestId></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length",
                                           "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                if fault == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
