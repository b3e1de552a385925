"""Run the service under uvicorn, with graceful shutdown: on SIGTERM/SIGINT the server stops accepting
connections, reports not-ready, lets every request in flight finish (up to ``graceful_seconds``), then exits."""

from __future__ import annotations

import gc
import ipaddress
import logging
import sys
from typing import Any

from .app import ServeConfig, ServiceState, _require, create_app

__all__ = ["run_server"]

log = logging.getLogger("harmonrank.serving")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, graceful_seconds: float = 30.0,
               log_level: str = "info", on_ready: Any = None) -> None:
    """Load and warm up the artifact (raising before anything binds if it is broken), then serve until a
    termination signal. ``on_ready(state)`` is called once the socket is listening."""
    uvicorn = _require("uvicorn")
    state = ServiceState(config)
    app = create_app(state)

    class _Server(uvicorn.Server):  # type: ignore[misc, name-defined]
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.draining = True  # /readyz answers 503 while in-flight requests finish
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            # the libraries loaded by now (torch, onnxruntime, pydantic, ...) are millions of long-lived objects:
            # moving them out of the collector's reach removes long full-collection pauses
            gc.collect()
            gc.freeze()
            if self.started:
                print(f"harmonrank serve: ready on http://{host}:{port} (model {state.model.version}, "
                      f"{state.model.artifact.manifest.get('ranker')})", file=sys.stderr, flush=True)
                if on_ready is not None:
                    on_ready(state)

    if not _is_loopback(host):
        log.warning("binding to %s, which is not a loopback address: anything that can reach it can rank", host)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                               timeout_graceful_shutdown=graceful_seconds, lifespan="on", server_header=False)
    _Server(uv_config).run()
