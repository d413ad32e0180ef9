"""`--output` templates for per-run outputs, and object storage locations, checked without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tritonkit.clients import storage
from tritonkit.clients.score_options import ScoreOptions
from tritonkit.errors import UsageError


def options(output, **kwargs) -> ScoreOptions:
    return ScoreOptions(model="churn", input="in.parquet", output=output, **kwargs)


def test_output_template_fills_run_id_date_and_shard_when_given(monkeypatch):
    monkeypatch.delenv("TRITONKIT_RUN_ID", raising=False)
    monkeypatch.delenv("TRITONKIT_RUN_DATE", raising=False)
    made = options("out/{date}/{run_id}/shard-{shard}-of-{shards}.parquet", shard=(1, 4), run_id="20261126T134500Z")
    assert made.output == Path("out/2026-11-26/20261126T134500Z/shard-1-of-4.parquet")
    monkeypatch.setenv("TRITONKIT_RUN_ID", "nightly-2026-11-26")
    monkeypatch.setenv("TRITONKIT_RUN_DATE", "2026-11-25")
    made = options("s3://lake/scores/{date}/{run_id}.parquet", rejects="s3://lake/rejects/{run_id}.jsonl")
    assert made.output == "s3://lake/scores/2026-11-25/nightly-2026-11-26.parquet"
    assert made.rejects == "s3://lake/rejects/nightly-2026-11-26.jsonl"


def test_output_template_defaults_run_id_to_the_utc_start_when_none_given(monkeypatch):
    monkeypatch.delenv("TRITONKIT_RUN_ID", raising=False)
    made = options("out/{run_id}.parquet")
    assert re.fullmatch(r"out/\d{8}T\d{6}Z\.parquet", str(made.output)) and not made.run_id_given


def test_resume_of_templated_output_needs_the_run_id_and_says_where_it_comes_from(monkeypatch):
    monkeypatch.delenv("TRITONKIT_RUN_ID", raising=False)
    with pytest.raises(UsageError, match=r"--resume of --output out/\{run_id\}.parquet: .*set TRITONKIT_RUN_ID"):
        options("out/{run_id}.parquet", resume=True)
    assert options("out/{run_id}.parquet", resume=True, run_id="r1").output == Path("out/r1.parquet")


@pytest.mark.parametrize("output", ["out/{runid}.parquet", "out/{run_id.parquet", "out/{0}.parquet"])
def test_output_template_refuses_unknown_keys_listing_the_valid_ones(output):
    with pytest.raises(UsageError, match=r"the keys are \{run_id\}, \{date\}, \{shard\}, \{shards\}"):
        options(output)


def test_run_id_refuses_characters_that_would_change_the_path():
    with pytest.raises(UsageError, match="run id '../x'"):
        options("out/{run_id}.parquet", run_id="../x")


def test_locate_maps_uris_to_filesystem_paths_and_refuses_credentials_in_them():
    where = storage.locate("abfs://scores@acct.dfs.core.windows.net/nightly/out.parquet")
    assert (where.path, where.sibling("x").uri) == (
        "scores/nightly/out.parquet",
        "abfs://scores@acct.dfs.core.windows.net/nightly/x",
    )
    with pytest.raises(UsageError) as refused:
        storage.locate("s3://AKIAX:hunter2@lake/in.parquet")
    assert "hunter2" not in str(refused.value) and "AKIAX" not in str(refused.value)
    with pytest.raises(UsageError, match="http:// is not a storage"):
        storage.locate("http://example.invalid/in.parquet")


def test_spark_engine_reads_s3_uris_as_s3a():
    pytest.importorskip("pyspark", reason="the spark extra: pip install -e .[spark]")
    made = ScoreOptions(
        model="churn", input="s3://lake/in/", output="s3://lake/out/{run_id}/", engine="spark", run_id="r"
    )
    assert (made.input, made.output) == ("s3a://lake/in/", "s3a://lake/out/r/")
