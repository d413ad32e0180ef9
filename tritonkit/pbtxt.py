"""config.pbtxt as text: Triton's protobuf message <-> protobuf text format (the typed side is model_config).

Text is protobuf text format in Triton's field declaration order (map keys sorted), so writing the
same config twice gives the same bytes. Every protobuf error becomes a ConfigError naming the field
and listing the valid fields (or enum values) of the message it belongs to.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from google.protobuf import json_format, text_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit import atomic
from tritonkit.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "config.pbtxt"
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_DUPLICATE_FIELD = re.compile(r'Message type "([\w.]+)" should not have multiple "(\w+)" fields')
_UNKNOWN_ENUM = re.compile(r'Enum type "([\w.]+)" has no value (?:named|with number) (\S+?)\.?$')
_POSITION = re.compile(r"^(\d+):(\d+) : ")


def config_error(message: str, *, field: str | None = None, value=None) -> ConfigError:
    """Build a ConfigError that also carries ``field`` and ``value`` as attributes."""
    error = ConfigError(message)
    error.field, error.value = field, value
    return error


# ---- text and files ---------------------------------------------------------------------------


def dump(message: Message) -> str:
    """Return ``message`` as protobuf text, fields in .proto declaration order, map keys sorted."""
    return text_format.MessageToString(message, use_index_order=True, as_utf8=True)


def parse(text: str, *, source: str = CONFIG_FILENAME) -> pb.ModelConfig:
    """Parse config.pbtxt ``text`` into an ``inference.ModelConfig``; ``source`` names it in errors."""
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise _translate(str(e), source) from e


def parse_dict(data: dict, *, source: str = "config JSON") -> pb.ModelConfig:
    """Parse the JSON form (Triton's /v2/models/NAME/config) into an ``inference.ModelConfig``."""
    try:
        return json_format.ParseDict(data, pb.ModelConfig())
    except json_format.ParseError as e:
        raise _translate(str(e).split("\n")[0], source) from e


def config_path(path: str | os.PathLike) -> Path:
    """Resolve ``path`` (a .pbtxt file, or a model folder holding config.pbtxt) to the file."""
    path = Path(path)
    return path if path.suffix == ".pbtxt" else path / CONFIG_FILENAME


def read_text(path: str | os.PathLike) -> tuple[Path, str]:
    """Return the config file resolved from ``path`` and its text; an unreadable file is a ConfigError."""
    file = config_path(path)
    try:
        return file, file.read_text(encoding="utf-8")
    except OSError as e:
        raise config_error(
            f"cannot read model config {file} ({e.strerror}); expected a {CONFIG_FILENAME} "
            "file or a model folder containing one",
            field="path",
            value=str(file),
        ) from e


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically to the config file resolved from ``path``; return that file."""
    file = config_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(file, text, mode=0o644)  # readable by Triton in a container, which may run as another user
    return file


def _translate(raw: str, source: str) -> ConfigError:
    """Turn a protobuf parse error's text into a ConfigError that names the field."""
    where, position = source, _POSITION.match(raw)
    if position:
        where, raw = f"{source}:{position.group(1)}:{position.group(2)}", raw[position.end() :]
    pool = pb.DESCRIPTOR.pool
    if match := _UNKNOWN_FIELD.search(raw):
        owner, name = match.groups()
        valid = ", ".join(f.name for f in pool.FindMessageTypeByName(owner).fields)
        return config_error(f"{where}: unknown field `{name}` in {owner}; valid fields: {valid}", field=name)
    if match := _DUPLICATE_FIELD.search(raw):
        owner, name = match.groups()
        return config_error(
            f"{where}: field `{name}` is set more than once in {owner}; expected at most once", field=name
        )
    if match := _UNKNOWN_ENUM.search(raw):
        enum, value = match.groups()
        named = re.search(r"(\w+)\s*:\s*" + re.escape(value), raw)
        name = named.group(1) if named else enum
        valid = ", ".join(v.name for v in pool.FindEnumTypeByName(enum).values if not v.name.endswith("INVALID"))
        return config_error(f"{where}: field `{name}` is {value}; expected one of {valid}", field=name, value=value)
    return config_error(f"{where}: {raw}")


# ---- typed config <-> protobuf -----------------------------------------------------------------
