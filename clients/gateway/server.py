"""`tritonkit gateway`: checks the settings once, then serves the ASGI application on Granian with N workers.

Before any worker starts: the store URL and the request-time feature declarations are checked, and when
Triton answers, each declaration is checked against the model's inputs (a wrong one stops the start with
exit code 2, naming it). Triton being down is not fatal: the workers serve store hits and pick the
metadata up when Triton comes. The settings reach the workers through a file only the gateway's user can
read (header values may be secrets); the workers' metrics meet in a fresh PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path

from tritonkit.clients.gateway import request_features
from tritonkit.clients.gateway.settings import SETTINGS_FILE_ENV, GatewaySettings
from tritonkit.clients.store import redact
from tritonkit.errors import ModelNotFoundError, ServerError, UsageError

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0
APP_FACTORY = "tritonkit.clients.gateway.app:create_app"


def check(settings: GatewaySettings) -> list[str]:
    """Checks what can be checked before serving; returns warnings (Triton down, model not loaded yet).

    Raises UsageError for a bad declaration file, or one that does not fit a model Triton describes.
    """
    from tritonkit.clients.gateway.live import LiveModel

    declared = request_features.load(settings.request_features, settings.models)
    warnings = []
    for model in settings.models:
        live = LiveModel(model, settings.endpoint, declared.get(model))
        try:
            meta = live.fetch_metadata(min(CHECK_TIMEOUT_S, max(settings.endpoint.timeout_s, 1.0)))
        except ModelNotFoundError as e:
            warnings.append(f"model `{model}` is not served by Triton yet: {e}")
            continue
        except ServerError as e:
            warnings.append(f"Triton did not describe model `{model}` ({e}); live calls start when it does")
            continue
        if model in declared:
            declared[model].check(meta)
    return warnings


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(settings: GatewaySettings, log_level: str = "warning") -> None:
    """Serves until SIGINT or SIGTERM (in-flight requests and write-backs finish first)."""
    from granian import Granian

    for warning in check(settings):
        logger.warning("%s", warning)
    if not port_free(settings.host, settings.port):
        raise UsageError(
            f"--port {settings.port} on {settings.host} is already in use; stop what holds it or pick another"
        )
    with tempfile.TemporaryDirectory(prefix="tritonkit-gateway-") as folder:
        folder = Path(folder)
        (folder / "metrics").mkdir()
        settings.write(folder / "settings.json")
        os.environ[SETTINGS_FILE_ENV] = str(folder / "settings.json")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "metrics")
        logger.info(
            "gateway for %s on http://%s:%d (%d worker(s)), store %s, %s",
            ", ".join(settings.models),
            settings.host,
            settings.port,
            settings.workers,
            redact(settings.store),
            settings.endpoint.describe(),
        )
        Granian(
            APP_FACTORY,
            factory=True,
            address=settings.host,
            port=settings.port,
            interface="asgi",
            workers=settings.workers,
            loop="uvloop",
            websockets=False,
            log_level=log_level,
            log_access=False,
            respawn_failed_workers=True,
        ).serve()
