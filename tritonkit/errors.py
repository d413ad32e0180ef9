"""The kit's exception root and the one table that maps outcomes to CLI exit codes.

| code | class | meaning |
|---|---|---|
| 0 | | done |
| 1 | TritonKitError (or a crash) | anything not below |
| 2 | UsageError, ConfigError | the request cannot be done as asked (bad option, file, config) |
| 3 | ServerStartError | the embedded Triton did not start (port taken, repository empty, model failed) |
| 4 | InputError | a record does not fit the model's inputs |
| 5 | ServerError | Triton answered with an error, or could not be reached |
| 6 | ExportError | an export failed or its parity check did |
| 7 | NotFreshError | no fresh prediction: a lookup found none, or the batch output is stale |
| 8 | RowsRejectedError | a bulk run finished, and some rows went to the rejects file (see below) |
| 9 | StoreError | the prediction store failed |
| 10 | OverloadedError | the model's queue turned the request away |
| 11 | DeadlineExceededError | no answer within the latency budget |
| 12 | OutputError | results could not be written |
| 13 | OutputInUseError | another run holds the output (one run per output at a time): retry later |
| 14 | ServerCrashedError | the embedded Triton crashed (or was killed) while serving and was not restarted |

Each class carries its code as `exit_code`; a subclass inherits its parent's unless it says otherwise.
`score --rejects-exit-code N` gives a RowsRejectedError the code N instead of 8 (0: such a run is done).
"""

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
        super().__init__(f"{name} port {port} on {host} is already in use; stop what holds it or pass --{name}-port")


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


class ServerUnavailableError(ServerError):
    """Triton cannot be reached, or is starting or restarting: worth retrying with backoff."""

    def __init__(self, message: str, *, model: str | None = None, status: str | None = "UNAVAILABLE"):
        super().__init__(message, model=model, status=status)


class ModelNotFoundError(ServerError):
    """The server does not serve the requested model (or version)."""


class OverloadedError(ServerError):
    """Triton turned the request away at once: the model's queue is full (its `max_queue_size`) or the
    request waited longer than the queue allows. Retry later, with backoff."""

    exit_code = 10

    def __init__(self, message: str, *, model: str | None = None, status: str | None = "UNAVAILABLE"):
        super().__init__(message, model=model, status=status)


class DeadlineExceededError(ServerError):
    """A call did not finish within its latency budget; a late answer is discarded."""

    exit_code = 11

    def __init__(self, model: str, budget_ms: float, elapsed_ms: float):
        self.budget_ms, self.elapsed_ms = budget_ms, elapsed_ms
        super().__init__(
            f"model `{model}`: no answer within the {budget_ms:g} ms budget (gave up after {elapsed_ms:.0f} ms)",
            model=model,
            status="DEADLINE_EXCEEDED",
        )


class ExportError(TritonKitError):
    """A model could not be exported, or its export does not compute what the source computes."""

    exit_code = 6


class OutputError(TritonKitError):
    """Results could not be written (folder not writable, disk full); no final file is left half-written."""

    exit_code = 12

    def __init__(self, path, reason: str, *, parts=None):
        self.path, self.reason, self.parts = str(path), reason, str(parts) if parts else None
        kept = f"; finished chunks stay in {self.parts} for --resume" if parts else ""
        super().__init__(f"cannot write {self.path}: {reason}; no final output was left{kept}")


class OutputInUseError(TritonKitError):
    """Another run holds the output: one run per output at a time. Not a usage error: a later try may find it
    free (a Kubernetes Job retries it; the holder's lock dies with it)."""

    exit_code = 13


class NotFreshError(TritonKitError):
    """No fresh prediction: a lookup returned nothing, or the last batch run is too old (monitors alarm on it)."""

    exit_code = 7


class RowsRejectedError(TritonKitError):
    """A bulk run finished and wrote its output, but some rows were rejected (see the rejects file)."""

    exit_code = 8

    def __init__(self, rejected: int, read: int, rejects: str, exit_code: int | None = None):
        self.rejected, self.read, self.rejects = rejected, read, rejects
        if exit_code is not None:  # the run's choice (--rejects-exit-code); 8 otherwise
            self.exit_code = exit_code
        super().__init__(f"{rejected:,} of {read:,} rows were rejected; their reasons are in {rejects}")


class StoreError(TritonKitError):
    """The prediction store failed, or holds something the kit cannot read."""

    exit_code = 9

    def __init__(self, message: str, *, url: str | None = None):
        self.url = url
        super().__init__(message)


class StoreUnavailableError(StoreError):
    """The prediction store cannot be reached (Redis down, SQLite file missing or unreadable)."""


class ServerCrashedError(TritonKitError):
    """The embedded Triton exited while serving without being asked to (a crash, a kill) and was not
    restarted (`--restart no`, or its restarts kept failing)."""

    exit_code = 14

    def __init__(self, message: str, *, code: int, signal_name: str | None = None, log_file=None):
        self.code, self.signal_name, self.log_file = code, signal_name, str(log_file) if log_file else None
        super().__init__(message)


def exit_code_for(error: BaseException) -> int:
    """Return the CLI exit code for ``error`` (1 for anything the kit did not raise on purpose)."""
    return getattr(error, "exit_code", 1) if isinstance(error, TritonKitError) else 1
