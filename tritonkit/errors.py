"""The kit's exception root and the one table that maps error classes to CLI exit codes."""

from __future__ import annotations


class TritonKitError(Exception):
    """Root of every error the kit raises on purpose."""

    exit_code = 1


class ConfigError(TritonKitError):
    """A model config (config.pbtxt or the typed object) is invalid."""

    exit_code = 2


class UsageError(TritonKitError):
    """The user asked for something that cannot be done as asked (bad option, missing file)."""

    exit_code = 2


class ServerStartError(TritonKitError):
    """The embedded Triton server could not be started."""

    exit_code = 3


class PortInUseError(ServerStartError):
    """A port the server needs is already taken."""

    def __init__(self, name: str, host: str, port: int):
        self.name, self.host, self.port = name, host, port
        super().__init__(
            f"{name} port {port} on {host} is already in use; stop what holds it or pass --{name}-port"
        )


class RepositoryError(ServerStartError):
    """The model repository is missing, empty or malformed."""


class ModelLoadError(ServerStartError):
    """A model in the repository failed to load."""

    def __init__(self, model: str, reason: str):
        self.model, self.reason = model, reason
        super().__init__(f"model `{model}` failed to load: {reason}")


class InputError(TritonKitError):
    """A request's input does not match what the model expects."""

    exit_code = 4

    def __init__(self, message: str, *, model: str | None = None, field: str | None = None, value=None):
        self.model, self.field, self.value = model, field, value
        super().__init__(message)


class ServerError(TritonKitError):
    """Triton answered with an error (unknown model, failed inference, unavailable)."""

    exit_code = 5

    def __init__(self, message: str, *, model: str | None = None, status: str | None = None):
        self.model, self.status = model, status
        super().__init__(message)


class ModelNotFoundError(ServerError):
    """The server does not serve the requested model (or version)."""


class ExportError(TritonKitError):
    """A model could not be exported, or its export does not compute what the source computes."""

    exit_code = 6


class StoreError(TritonKitError):
    """The prediction store failed, or holds something the kit cannot read."""

    exit_code = 9

    def __init__(self, message: str, *, url: str | None = None):
        self.url = url
        super().__init__(message)


class StoreUnavailableError(StoreError):
    """The prediction store cannot be reached (Redis down, SQLite file missing or unreadable)."""


def exit_code_for(error: BaseException) -> int:
    """Return the CLI exit code for ``error`` (1 for anything the kit did not raise on purpose)."""
    return getattr(error, "exit_code", 1) if isinstance(error, TritonKitError) else 1
