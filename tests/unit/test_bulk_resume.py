"""The pieces of `score --resume` that need no server: input fingerprints, the output lock, stale temporaries."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from tritonkit.clients.fingerprint import digest
from tritonkit.clients.runlock import OutputLock, remove_stale_temporaries
from tritonkit.errors import OutputInUseError

TABLE = pa.table(
    {
        "i": [1, None, 3, 4],
        "s": ["a", None, "ccc", "d"],
        "b": [b"\xc0", None, b"q", b""],
        "l": [[1.0, 2.0], None, [3.0], []],
        "f": [1.5, None, 2.0, float("nan")],
    }
)


def test_digest_is_the_same_when_the_same_values_come_sliced_or_in_other_batches():
    rebuilt = pa.concat_tables([TABLE.slice(0, 1), TABLE.slice(1)])
    assert digest(rebuilt) == digest(TABLE)
    fresh = pa.table({name: TABLE.column(name).to_pylist()[1:] for name in TABLE.column_names}, schema=TABLE.schema)
    assert digest(TABLE.slice(1)) == digest(fresh)


@pytest.mark.parametrize(
    "column, values",
    [("i", [1, None, 3, 5]), ("s", ["a", None, "ccd", "d"]), ("l", [[1.0, 2.0], [], [3.0], []]), ("f", [1.5, 0, 2, 1])],
)
def test_digest_differs_when_one_value_or_null_changes(column, values):
    changed = TABLE.set_column(
        TABLE.column_names.index(column), column, pa.array(values, TABLE.schema.field(column).type)
    )
    assert digest(changed) != digest(TABLE)


def test_output_lock_refuses_a_second_run_naming_the_holder_and_frees_when_the_holder_is_killed(tmp_path):
    out = tmp_path / "out.parquet"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from tritonkit.clients.runlock import OutputLock; "
            f"OutputLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputInUseError, match=rf"in use by another run \(pid {holder.pid} on host"):
            OutputLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(out):
        with pytest.raises(OutputInUseError, match=rf"pid {os.getpid()}"):  # one holder, even within a process
            OutputLock(out).acquire()
    assert list(tmp_path.iterdir()) == [], "the lock file goes with its run"


def test_stale_temporaries_are_removed_except_this_process_and_other_outputs(tmp_path):
    names = [".out.parquet.tmp-1234", f".out.parquet.tmp-{os.getpid()}", ".other.parquet.tmp-99", "out.parquet.tmp-5"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path, ["out.parquet"])
    assert [p.name for p in removed] == [".out.parquet.tmp-1234"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
