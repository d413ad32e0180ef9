"""Properties of the input readers (`sources.chunks`): files in, exact chunks of rows out.

Whatever the files hold (mixed types, huge strings, malformed or non-UTF-8 lines, empty files, a
column typed differently in each file), the chunks hold every row once, in order, with its values
unchanged (or, for a malformed line, an error naming the line); unreadable files are a UsageError
naming the file.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import json_values, odd_floats, odd_ints, odd_text

from tritonkit.clients import mapping, sources
from tritonkit.clients.sources import JSON_ERROR_COLUMN
from tritonkit.errors import UsageError

KEYS = ["a", "b", "c"]


def same(original, back) -> bool:
    """Equal as JSON values: numbers by value (1 == 1.0, NaN == NaN), booleans stay booleans."""
    if original is None:
        return back is None
    if isinstance(original, bool) or isinstance(back, bool):
        return isinstance(original, bool) and isinstance(back, bool) and original == back
    if isinstance(original, (int, float)):
        return isinstance(back, (int, float)) and (
            back == original or isinstance(original, float) and math.isnan(original) and math.isnan(back)
        )
    if isinstance(original, list):
        return isinstance(back, list) and len(back) == len(original) and all(map(same, original, back))
    if isinstance(original, dict):
        return isinstance(back, dict) and all(same(original.get(k), back.get(k)) for k in {*original, *back})
    return original == back


def rows_of(files: list[Path], chunk_rows: int, columns=None, text_columns=()) -> list[dict]:
    """Every row the chunks hold, as Python values (JSON-text columns decoded), checking chunk numbering."""
    rows = []
    for expected_index, chunk in enumerate(sources.chunks(files, chunk_rows, columns, text_columns)):
        assert chunk.index == expected_index and chunk.first_row == expected_index * chunk_rows
        assert chunk.table.num_rows == chunk_rows or chunk.table.num_rows > 0
        decoded = {}
        for field in chunk.table.schema:
            values = chunk.table.column(field.name).to_pylist()
            if mapping.is_json_text(field):
                values = [None if v is None else json.loads(v) for v in values]
            decoded[field.name] = values
        rows += [{k: v[i] for k, v in decoded.items()} for i in range(chunk.table.num_rows)]
    sizes = [c.table.num_rows for c in sources.chunks(files, chunk_rows, columns, text_columns)]
    assert all(s == chunk_rows for s in sizes[:-1])
    return rows


lines = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3).map(lambda r: ("record", r)),
    st.dictionaries(
        st.sampled_from(KEYS), st.one_of(odd_ints, odd_floats, st.booleans(), odd_text, st.none()), max_size=3
    ).map(lambda r: ("record", r)),
    st.sampled_from(
        [
            b"{not json",
            b"[1, 2]",
            b"42",
            b'"text"',
            b"null",
            b'{"a": 1',
            b"\xff\xfe{}",
            b'{"a": "\xc3\x28"}',
            b"[" * 5000 + b"]" * 5000,
        ]
    ).map(lambda raw: ("bad", raw)),
    st.just(("blank", b"   ")),
)


@given(st.lists(st.lists(lines, max_size=8), min_size=1, max_size=3), st.integers(1, 7), st.integers(1, 4))
def test_jsonl_chunks_hold_every_line_once_with_its_values(files_lines, chunk_rows, block_rows):
    with tempfile.TemporaryDirectory() as folder:
        files, expected = [], []
        for f, file_lines in enumerate(files_lines):
            path = Path(folder) / f"part-{f}.jsonl"
            raw = []
            for number, (kind, item) in enumerate(file_lines, start=1):
                if kind == "record":
                    raw.append(json.dumps(item).encode())
                    expected.append(("record", item))
                else:
                    raw.append(item)
                    if kind == "bad":
                        expected.append(("bad", f"line {number} of {path.name} is not a JSON object"))
            path.write_bytes(b"\n".join(raw) + (b"\n" if raw else b""))
            files.append(path)
        # Small blocks, so one file's blocks infer different types as later files would.
        with mock.patch.object(sources, "_jsonl_batches", functools.partial(sources._jsonl_batches, rows=block_rows)):
            rows = rows_of(sources.input_files(Path(folder)), chunk_rows)
    assert len(rows) == len(expected)
    for row, (kind, item) in zip(rows, expected):
        if kind == "bad":
            assert item in row[JSON_ERROR_COLUMN]
            assert len(row[JSON_ERROR_COLUMN]) < 400
            assert all(row.get(k) is None for k in KEYS)
        else:
            assert row.get(JSON_ERROR_COLUMN) is None
            for key in KEYS:
                assert same(item.get(key), row.get(key)), (key, item.get(key), row.get(key))


column_values = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), odd_floats), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), st.text(max_size=8), st.just("x" * 100_000)), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), st.booleans()), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), st.lists(st.floats(allow_nan=False), max_size=3)), min_size=1, max_size=6),
)


@given(st.lists(st.one_of(column_values, st.just("empty")), min_size=1, max_size=4), st.integers(1, 5))
def test_parquet_folder_keeps_values_when_files_type_a_column_differently(files_values, chunk_rows):
    with tempfile.TemporaryDirectory() as folder:
        expected, files = [], []
        for f, values in enumerate(files_values):
            path = Path(folder) / f"part-{f}.parquet"
            if values == "empty":
                path.write_bytes(b"")  # an empty file holds no rows
            else:
                pq.write_table(pa.table({"x": pa.array(values), "id": pa.array(range(len(values)))}), path)
                expected += values
            files.append(path)
        files = sources.input_files(Path(folder))
        rows = rows_of(files, chunk_rows)
        assert sources.count_rows(files) == len(expected)
        assert sources.column_names(files) == ([] if not expected else ["x", "id"])
    assert len(rows) == len(expected)
    for row, value in zip(rows, expected):
        assert same(value, row["x"]), (value, row["x"])


@given(
    st.lists(
        st.lists(
            st.one_of(
                st.none(),
                st.integers(-(10**6), 10**6),
                st.floats(-1e6, 1e6),
                st.text(alphabet="abc", min_size=1, max_size=4),
            ),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=3,
    ),
    st.integers(1, 4),
)
def test_csv_folder_keeps_text_columns_exact_and_other_columns_by_value(files_values, chunk_rows):
    with tempfile.TemporaryDirectory() as folder:
        expected = []
        for f, values in enumerate(files_values):
            text = [None if v is None else str(v) for v in values]
            pacsv.write_csv(
                pa.table({"feature": pa.array(text, pa.string()), "other": pa.array(text, pa.string())}),
                Path(folder) / f"part-{f}.csv",
            )
            expected += text
        (Path(folder) / "part-9.csv").write_bytes(b"")
        rows = rows_of(sources.input_files(Path(folder)), chunk_rows, ["feature", "other"], ["feature"])
    assert [r["feature"] for r in rows] == expected  # feature columns are read as text, exactly
    assert len(rows) == len(expected)
    for row, text in zip(rows, expected):
        other = row["other"]  # typed by Arrow per file: a number where the whole file's column is numeric
        assert (other is None) == (text is None)
        if text is not None:
            assert other == text or not isinstance(other, str) and float(text) == other, (text, other)


@pytest.mark.parametrize(
    "name, content", [("broken.parquet", b"PAR1 not really"), ("broken.csv", b"a,b\n1,2\n1,2,3\n")]
)
def test_chunks_raise_usage_error_naming_the_file_when_it_is_unreadable(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError, match=name):
        list(sources.chunks([path], 10))


def test_empty_files_hold_no_rows_and_no_columns(tmp_path):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_bytes(b"" if name == "a.csv" else b"\n\n")
    files = sources.input_files(tmp_path)
    assert sources.column_names(files) == [] and list(sources.chunks(files, 5)) == []
    (tmp_path / "c.jsonl").write_bytes(b"")
    assert sources.column_names([tmp_path / "c.jsonl"]) == [] and list(sources.chunks([tmp_path / "c.jsonl"], 5)) == []
