"""Who may reach what on the embedded Triton: the admin key of the restricted APIs and the TLS files.

Triton can put API groups behind a header key (`--http-restricted-api`, `--grpc-restricted-protocol`).
The kit closes the groups that change the server or reach into the host by default, reads the key
from a file, and never prints it (logs show the command line masked).
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import UsageError

# Triton's restricted-API groups (tritonserver 2.51 --help). The default keeps closed what changes the
# server or reaches into the host: loading/unloading models, registering shared-memory regions, trace
# and log settings (both write files). Inference, health and metadata stay open; so do model-config
# (read-only; the kit's clients and perf_analyzer read max_batch_size from it) and statistics
# (read-only counters that the unauthenticated metrics port publishes anyway).
RESTRICTABLE_APIS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
DEFAULT_RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_HEADER = "tritonkit-admin-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton prefixes a gRPC restricted-protocol header with it
_ADMIN_KEY = re.compile(r"[A-Za-z0-9._~+/-]{16,256}")
MASK = "***"


def admin_headers(key: str, protocol: str) -> dict[str, str]:
    """The header a client sends to reach the restricted APIs (gRPC and HTTP spell it differently)."""
    return {(GRPC_HEADER_PREFIX if protocol == "grpc" else "") + ADMIN_HEADER: key}


def read_admin_key(path: Path) -> str:
    """Reads and checks an admin key file, which other users must not be able to read; errors never quote the key."""
    try:
        mode = Path(path).stat().st_mode
        key = Path(path).read_text().strip()
    except OSError as e:
        raise UsageError(f"--admin-key-file {path} cannot be read: {e.strerror}") from None
    check_admin_key(key, f"--admin-key-file {path}")
    if mode & 0o007:
        raise UsageError(
            f"--admin-key-file {path} is open to every user on this host (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}` (on Kubernetes, mount its Secret with defaultMode 0400)"
        )
    return key


def check_admin_key(key: str, source: str = "the admin key") -> None:
    if not _ADMIN_KEY.fullmatch(key):
        raise UsageError(
            f"{source} holds {len(key)} characters; expected 16 to 256 of A-Z a-z 0-9 . _ ~ + / - "
            "(for example from `openssl rand -hex 32`)"
        )


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for one endpoint's TLS; with `client_ca`, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def check(self, endpoint: str) -> None:
        for name in ("cert", "key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{endpoint} TLS {name.replace('_', ' ')} file {path} does not exist")


def masked_command(command: list[str]) -> list[str]:
    """The command line for logs: restricted-API keys replaced by `MASK`."""
    return [
        re.sub(r"^(--(?:grpc-restricted-protocol|http-restricted-api)=[^=]*=).*", rf"\g<1>{MASK}", a) for a in command
    ]
