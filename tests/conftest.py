"""Shared pytest fixtures.

- `s3_server` (session): a real moto S3 server on 127.0.0.1 (free port), reached over HTTP
  through s3fs. Yields an `S3Server` with `endpoint_url`, `storage_options` (pass them to
  `open_survey`, `write_survey`, `write_tile_catalog`, ...), `new_bucket()` -> "s3://<name>",
  and a request log (`requests`, `bytes_sent(prefix)`, `reset_log()`) that counts the response
  bytes the server sent, so tests can show that reads are chunk-aligned. Dummy AWS credentials
  are set in the environment for the session.
- `small_survey` (session): a small 7-band synthetic survey (Gaussian galaxies + noise) written
  locally; yields a `SmallSurvey` with `url`, `truth` (dict of NumPy columns: x, y, flux per
  band, ...), `shape`, and `survey` (opened). About 1 s.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _CountingApp:
    """WSGI middleware recording (method, path, response bytes) of every request."""

    def __init__(self, app: Any, log: list[tuple[str, str, int]], lock: threading.Lock):
        self.app, self.log, self.lock = app, log, lock

    def __call__(self, environ: dict, start_response: Any):
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        body = list(self.app(environ, start_response))
        with self.lock:
            self.log.append((method, path, sum(len(b) for b in body)))
        return body


@dataclass
class S3Server:
    """Handle on the moto server: endpoint, s3fs options, and the request log."""

    endpoint_url: str
    storage_options: dict[str, Any]
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_bucket(self) -> str:
        """Create a fresh bucket and return its s3:// URL."""
        import s3fs

        name = f"gs-{uuid.uuid4().hex[:12]}"
        fs = s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)
        fs.mkdir(name)
        return f"s3://{name}"

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def bytes_sent(self, prefix: str = "/", method: str = "GET") -> int:
        """Response bytes sent for requests whose path starts with `prefix`."""
        with self._lock:
            return sum(n for m, p, n in self.requests if m == method and p.startswith(prefix))


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    handle = S3Server(
        endpoint_url=endpoint,
        storage_options={
            "key": "testing", "secret": "testing", "endpoint_url": endpoint},
    )

    class _Server(ThreadedMotoServer):
        def _server_entry(self) -> None:  # same as moto's, with the counting middleware
            from moto.moto_server.threaded_moto_server import MotoRequestHandler
            from moto.server import DomainDispatcherApplication, create_backend_app
            from werkzeug.serving import make_server

            app = _CountingApp(
                DomainDispatcherApplication(create_backend_app), handle.requests, handle._lock
            )
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = _Server(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield handle
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class SmallSurvey:
    url: str
    shape: tuple[int, int]
    truth: dict[str, np.ndarray]
    survey: Any


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory: pytest.TempPathFactory) -> SmallSurvey:
    from galscale.survey.store import open_survey
    from galscale.survey.synthetic import make_gaussian_survey

    url = str(tmp_path_factory.mktemp("survey") / "small.zarr")
    truth = make_gaussian_survey(url, shape=(600, 700), n_sources=60, seed=1, chunk=128)
    return SmallSurvey(url=url, shape=(600, 700), truth=truth, survey=open_survey(url))
