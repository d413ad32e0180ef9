"""`tritonkit export xgboost|lightgbm|catboost MODEL`: boosted trees to ONNX (or Triton's FIL layout).

MODEL is the library's native file (XGBoost `.json` / `.ubj` / `.model`, LightGBM's text `.txt`,
CatBoost `.cbm`) or a joblib file holding its scikit-learn wrapper, alone or as the last step of a
Pipeline. A native file is loaded into the library's own scikit-learn wrapper, so every form goes
through one path: the scikit-learn export (`sklearn.py`, `column_export.py`) with the converters
`trees_onnx` registers, parity against the library's own predict, `label` + `probabilities` for
classifiers. `--format fil` writes the model file and config for Triton's FIL backend (`fil.py`); a
Pipeline with preprocessing becomes an ensemble of its preprocessing (ONNX) and the trees (FIL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError
from tritonkit.export.options import ExportOptions, ExportResult
from tritonkit.extras import requires

LIBRARIES = ("xgboost", "lightgbm", "catboost")
JOBLIB_SUFFIXES = (".joblib", ".pkl", ".pickle")
_CLASSIFIER_OBJECTIVES = ("binary", "multiclass", "multiclassova", "softmax", "ova", "multiclass_ova")


def library_of(estimator) -> str | None:
    """The tree library of an estimator or of a Pipeline's last step (None when it is none of them)."""
    steps = getattr(estimator, "steps", None)
    last = steps[-1][1] if steps else estimator
    root = type(last).__module__.split(".")[0]
    return root if root in LIBRARIES else None


def _need(library: str) -> None:
    converters = () if library == "catboost" else ("onnxmltools",)  # CatBoost writes ONNX itself
    requires("trees", library, *converters, what=f"`tritonkit export {library}`")


def load_trees(library: str, path: Path):
    """The model in `path` as the library's scikit-learn wrapper (or the Pipeline that ends in one)."""
    path = Path(path)
    if library not in LIBRARIES:
        raise UsageError(f"tree library {library!r}; expected one of {', '.join(LIBRARIES)}")
    _need(library)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    if path.suffix.lower() in JOBLIB_SUFFIXES:
        from tritonkit.export.sklearn import describe, load_estimator

        estimator = load_estimator(path)
        if library_of(estimator) != library:
            raise UsageError(
                f"{path} holds {describe(estimator)}, not a {library} model"
                + (f": use `tritonkit export {library_of(estimator)}`" if library_of(estimator) else "")
            )
        return estimator
    try:
        return {"xgboost": _native_xgboost, "lightgbm": _native_lightgbm, "catboost": _native_catboost}[library](path)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{path} is not a {library} model file: {type(e).__name__}: {e}") from e


def _native_xgboost(path: Path):
    import json

    import xgboost

    booster = xgboost.Booster(model_file=str(path))
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    model = xgboost.XGBClassifier() if objective.startswith(("binary:", "multi:")) else xgboost.XGBRegressor()
    model.load_model(str(path))
    return model


def _native_lightgbm(path: Path):
    import lightgbm
    from sklearn.preprocessing import LabelEncoder

    booster = lightgbm.Booster(model_file=str(path))
    objective = str(booster.params.get("objective") or booster.dump_model()["objective"]).split()[0]
    if objective in _CLASSIFIER_OBJECTIVES:
        classes = max(2, booster.num_model_per_iteration())
        model = lightgbm.LGBMClassifier(objective=objective)
        model._classes, model._n_classes = np.arange(classes), classes
        model._le = LabelEncoder().fit(np.arange(classes))
    else:
        model = lightgbm.LGBMRegressor(objective=objective)
    # LightGBM has no way to load a model file into its wrapper: these are what its predict reads.
    model._Booster, model._objective, model.fitted_ = booster, objective, True
    model._n_features = model._n_features_in = booster.num_feature()
    return model


def _native_catboost(path: Path):
    import catboost

    plain = catboost.CatBoost().load_model(str(path))
    loss = str(plain.get_all_params().get("loss_function", ""))
    classifier = loss in ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")
    model = (catboost.CatBoostClassifier() if classifier else catboost.CatBoostRegressor()).load_model(str(path))
    if model.get_cat_feature_indices():
        raise UsageError(
            f"{path}: CatBoost's ONNX export takes no categorical features (cat_features); encode them in a "
            "scikit-learn Pipeline before CatBoost and export that with `tritonkit export catboost`"
        )
    return model


def split_scale(estimator, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and spread of each feature from the split thresholds of XGBoost or LightGBM trees (else None)."""
    library = library_of(estimator)
    if library == "xgboost":
        table = estimator.get_booster().trees_to_dataframe()
        table = table[table["Feature"] != "Leaf"]
        names = estimator.get_booster().feature_names or [f"f{i}" for i in range(n)]
        features, thresholds = table["Feature"].map({name: i for i, name in enumerate(names)}), table["Split"]
    elif library == "lightgbm":
        table = estimator.booster_.trees_to_dataframe()
        table = table[table["split_feature"].notna()]
        names = estimator.booster_.feature_name()
        features, thresholds = table["split_feature"].map({name: i for i, name in enumerate(names)}), table["threshold"]
    else:
        return None
    centre, spread = np.zeros(n), np.ones(n)
    features, thresholds = features.to_numpy(), thresholds.to_numpy(np.float64)
    for i in range(n):
        used = thresholds[features == i]
        if used.size:
            low, high = used.min(), used.max()
            centre[i], spread[i] = (low + high) / 2, max((high - low) / 2, abs(low) * 0.1, 1e-3)
    return centre, spread


def export_trees(
    library: str, model_path: Path, options: ExportOptions, n_features: int | None = None, inputs: str = "auto"
) -> ExportResult:
    """Export a boosted-tree model as ONNX (the scikit-learn path) or, with --format fil, for the FIL backend."""
    from tritonkit.export.sklearn import export_estimator

    estimator = load_trees(library, model_path)
    if options.format == "fil":
        from tritonkit.export.fil import export_fil

        return export_fil(estimator, library, options, inputs)
    return export_estimator(estimator, options, n_features, inputs)
