#!/usr/bin/env bash
# The main job, end to end on the embedded server: export churn, serve it, predict over gRPC and HTTP, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
REPO=${REPO:-model_repository}
HTTP_PORT=${HTTP_PORT:-8000} GRPC_PORT=${GRPC_PORT:-8001} METRICS_PORT=${METRICS_PORT:-8002}
mkdir -p runs

echo "== export: train the churn example and write $REPO/churn/1"
"$BIN/tritonkit" export churn --repository "$REPO" --version 1 --replace

echo "== serve: the embedded Triton on loopback"
"$BIN/tritonkit" serve --model-repository "$REPO" --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
  --metrics-port "$METRICS_PORT" --log-file runs/triton.log > runs/serve.out 2>&1 &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  grep -q "Triton ready" runs/serve.out 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat runs/serve.out; exit 1; }
  sleep 1
done
cat runs/serve.out

RECORD='{"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "days_since_login": 21, "num_products": 1}'
echo "== predict over gRPC"
"$BIN/tritonkit" predict --model churn --url "127.0.0.1:$GRPC_PORT" --protocol grpc --input "$RECORD"
echo "== predict over HTTP"
"$BIN/tritonkit" predict --model churn --url "127.0.0.1:$HTTP_PORT" --protocol http --input "$RECORD"

echo "== stop"
kill -INT $SERVER
wait $SERVER
trap - EXIT
tail -n 2 runs/serve.out
