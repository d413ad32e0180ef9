# syntax=docker/dockerfile:1
# The tritonkit image: the `tritonkit` CLI, run by the Helm chart's batch jobs (`tritonkit score ...`), its
# gateway (`tritonkit gateway ...`, hence the gateway extra) and its guard sidecar (`tritonkit guard ...`, the
# validating front of Triton's HTTP endpoint).
# Triton itself runs from NVIDIA's image (helm/tritonkit/values.yaml: image.*); this one is a client.
#
#   docker build -t tritonkit:0.1.0 .
#   docker run --rm tritonkit:0.1.0 score --help

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/tritonkit/bin:$PATH
# pyproject pins torch==2.13.0; install that version from PyTorch's CPU index first, so that `pip install .`
# finds it satisfied (2.13.0+cpu matches ==2.13.0) instead of pulling the default wheel with its CUDA libraries.
RUN python -m venv /opt/tritonkit \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY . .
RUN pip install ".[gateway]" \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0') and torch.version.cuda is None, torch.__version__" \
    && tritonkit --help > /dev/null

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
