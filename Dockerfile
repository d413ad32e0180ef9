# syntax=docker/dockerfile:1
# The tritonkit client image: `pip install tritonkit` and nothing more (predict, score, lookup, freshness, the
# gateway, the guard, plan, models), run by the Helm chart's batch Jobs (`tritonkit score ...`), its gateway
# (`tritonkit gateway ...`) and its guard sidecar (`tritonkit guard ...`, the validating front of Triton's HTTP
# endpoint). No torch, no onnx, no Triton: Triton runs from NVIDIA's image (helm/tritonkit/values.yaml:
# image.*); exporting models, benchmarks and Spark are extras installed where they run (README: Installing).
#
#   docker build -t tritonkit:0.1.0 .
#   docker run --rm tritonkit:0.1.0 score --help

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tritonkit
WORKDIR /src
COPY . .
# The client install, checked to hold no extra; then what a client never runs leaves the venv: pip itself, the
# test suites and C headers that the numpy, pandas and pyarrow wheels carry, and Arrow Flight (an RPC framework
# the kit never imports; nothing else in pyarrow links it). The imports after it prove the rest still loads (from
# /: in /src the source folder `tritonkit/` would shadow the installed package).
RUN /opt/tritonkit/bin/pip install . \
    && cd / \
    && /opt/tritonkit/bin/python -c "import importlib.util as u; \
absent = [m for m in ('torch', 'onnx', 'onnxruntime', 'pyspark', 'locust', 'pytriton') if u.find_spec(m) is None]; \
assert len(absent) == 6, absent" \
    && /opt/tritonkit/bin/pip uninstall --yes --quiet pip setuptools \
    && find /opt/tritonkit/lib -depth -type d -path '*/site-packages/*' \( -name tests -o -name include \) \
        -exec rm -rf {} + \
    && rm -f /opt/tritonkit/lib/python3*/site-packages/pyarrow/*flight* \
    && /opt/tritonkit/bin/python -c "import numpy, pandas, pyarrow.csv, pyarrow.dataset, pyarrow.fs, pyarrow.json, \
pyarrow.parquet, tritonclient.grpc, tritonclient.http, tritonkit.clients.score, tritonkit.clients.hybrid, \
tritonkit.clients.gateway.server, tritonkit.clients.store, tritonkit.server.guard, granian, uvloop, xxhash, yaml" \
    && /opt/tritonkit/bin/tritonkit --help > /dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/tritonkit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Numeric non-root user: the chart's batch pods run as 10001 with runAsNonRoot and a read-only root filesystem.
RUN groupadd --gid 10001 tritonkit \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin tritonkit
COPY --from=build /opt/tritonkit /opt/tritonkit
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["tritonkit"]
CMD ["--help"]
