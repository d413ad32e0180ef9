"""The seed-style hybrid service `tritonkit bench --scenarios hybrid` measures the gateway against.

What users of this kit come from, written the usual way: FastAPI, one synchronous Redis GET per request for
the precomputed prediction and, on a miss, the entity's features from Redis and the model in process
(onnxruntime), with the request-time features computed inline. No Triton, no budget, no metrics.

    TRITONKIT_SEED_REDIS=redis://127.0.0.1:6379/0 TRITONKIT_SEED_ONNX=repo/churn/1/model.onnx \\
        uvicorn tritonkit.benchmarks.seed_service:app --port 8090

It reads the keys the kit's store writes (`tritonkit:{model}:p:<id>` and `...:f:<id>`), so both services
answer from the same data.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import numpy as np
import onnxruntime as ort
import redis
from fastapi import FastAPI, HTTPException

MODEL = os.environ.get("TRITONKIT_SEED_MODEL", "churn")
app = FastAPI(title="seed-style hybrid service")
cache = redis.Redis.from_url(os.environ.get("TRITONKIT_SEED_REDIS", "redis://127.0.0.1:6379/0"))
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ.get("TRITONKIT_SEED_ONNX", "model.onnx"), options)
inputs = [i.name for i in session.get_inputs()]
outputs = [o.name for o in session.get_outputs()]


@app.get("/predict/{user_id}")
def predict(user_id: str):
    cached = cache.get(f"tritonkit:{{{MODEL}}}:p:{user_id}")
    if cached is not None:
        return {"user_id": user_id, "prediction": json.loads(cached)["outputs"], "source": "batch"}
    features = cache.hgetall(f"tritonkit:{{{MODEL}}}:f:{user_id}")
    if not features:
        raise HTTPException(status_code=404, detail=f"no prediction and no features for {user_id}")
    now = datetime.now()
    row = {k.decode(): json.loads(v) for k, v in features.items() if not k.startswith(b"@")}
    row.update({"hour_of_day": now.hour, "day_of_week": now.weekday(), "is_weekend": int(now.weekday() >= 5)})
    feeds = {name: np.asarray([[row[name]]], dtype=np.float32) for name in inputs}
    result = session.run(outputs, feeds)
    prediction = {name: value.reshape(-1)[0].item() for name, value in zip(outputs, result)}
    return {"user_id": user_id, "prediction": prediction, "source": "realtime"}
