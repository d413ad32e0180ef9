"""The committed churn config is exactly what `tritonkit export churn` writes."""

from pathlib import Path

from tritonkit.export.churn import FEATURES, model_config
from tritonkit.model_config import ModelConfig

COMMITTED = Path(__file__).resolve().parents[2] / "model_repository" / "churn" / "config.pbtxt"


def test_committed_churn_config_equals_export_when_regenerated():
    assert COMMITTED.read_text() == model_config().to_pbtxt()


def test_churn_config_batches_dynamically_with_one_input_per_feature():
    config = ModelConfig.read(COMMITTED)
    assert [t.name for t in config.inputs] == FEATURES
    assert config.max_batch_size >= 1024 and config.dynamic_batching is not None
