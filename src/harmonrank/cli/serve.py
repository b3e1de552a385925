"""``harmonrank serve``: the HTTP ranking service over an exported artifact."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import DIR, cli

__all__ = ["serve_cmd"]


@cli.command("serve")
@click.option("--artifact", "-a", type=DIR, required=True,
              help="Artifact folder of `harmonrank export` (or a symlink to one: reload re-reads it).")
@click.option("--host", default="127.0.0.1", help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="TCP port.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Requests scored at once; the torch engine also splits each request over this many threads. "
                   "Default: $HARMONRANK_THREADS, else 1.")
@click.option("--max-candidates", type=click.IntRange(min=1), default=10_000, help="Most candidates per request.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=16.0, help="Largest request body (MiB).")
@click.option("--max-queue", type=click.IntRange(min=1), default=256,
              help="Rank requests admitted at once (parsing, waiting or scoring); more are shed with 503.")
@click.option("--admin-token-env", default="HARMONRANK_ADMIN_TOKEN",
              help="Environment variable holding the bearer token of POST /v1/admin/reload (unset: disabled).")
@click.option("--graceful-seconds", type=click.FloatRange(min=0), default=30.0,
              help="On SIGTERM, how long requests in flight may take to finish.")
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="Scoring engine: torch (the network's weights through the fused CPU kernel), onnx (ONNX "
                   "Runtime), auto (torch when the artifact has weights and the kernel builds).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info")
def serve_cmd(artifact: Path, host: str, port: int, threads: int | None, max_candidates: int, max_body_mb: float,
              max_queue: int, admin_token_env: str, graceful_seconds: float, engine: str, log_level: str) -> None:
    """Serve POST /v1/rank over an exported artifact; needs the `serve` extra (docs/serving.md)."""
    from ..serving import ServeConfig, run_server
    from ..threads import _default

    config = ServeConfig(artifact=artifact, threads=threads or _default(), max_candidates=max_candidates,
                         max_body_bytes=int(max_body_mb * (1 << 20)), max_queue=max_queue,
                         admin_token_env=admin_token_env, engine=engine)
    run_server(config, host=host, port=port, graceful_seconds=graceful_seconds, log_level=log_level)
