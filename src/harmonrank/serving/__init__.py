"""The HTTP ranking service (``harmonrank serve``): FastAPI + uvicorn over a verified ONNX artifact.

Needs the ``serve`` extra (``pip install 'harmonrank[serve]'``). See docs/serving.md.
"""

from __future__ import annotations

from .app import LoadedModel, ServeConfig, ServiceState, create_app
from .server import run_server

__all__ = ["LoadedModel", "ServeConfig", "ServiceState", "create_app", "run_server"]
