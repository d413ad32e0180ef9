"""The file formats bulk scoring reads and writes, by suffix: one table for inputs, outputs and folders."""

from __future__ import annotations

from pathlib import Path

from tritonkit.errors import UsageError

SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
NAMES = ("parquet", "csv", "jsonl")
EXTENSION = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}  # what the kit gives files it names


def of(path: Path | str) -> str | None:
    """The format of `path` by its suffix, or None when the kit does not read it."""
    return SUFFIXES.get(Path(path).suffix.lower())


def checked(name: str, option: str = "--format") -> str:
    if name not in NAMES:
        raise UsageError(f"{option} is {name!r}; expected {', '.join(NAMES)}")
    return name
