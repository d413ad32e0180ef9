#!/usr/bin/env bash
# The GPU check, in one command, on a machine that has torch but neither tritonserver nor network:
# installs the carried wheels (.whl/: nvidia-pytriton, tritonclient, python-rapidjson; .whl/fallback/:
# protobuf, used only when tritonclient's generated code refuses the machine's protobuf), makes the kit
# importable as pyproject.toml maps it (no pip install of the kit), prints the machine, then runs
# `python -m tritonkit.benchmarks.gpu` and the GPU-only integration test.
#
#   OUT=/some/folder bash scripts/device-check.sh [gpu.py options: --quick, --seconds N, --models a,b]
#
# Results land in $OUT: gpu.json, gpu.md, triton.log, device-check.log. PYTHON (default python3) and
# WHEELS (default .whl) can be overridden, e.g. to rehearse on a CPU machine with another Python.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/tritonkit-device-check}"
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/tritonkit-site}"
KIT="${KIT:-/tmp/tritonkit-kit}"
mkdir -p "$OUT"
exec > >(tee "$OUT/device-check.log") 2>&1
step() { echo "== $(date +%T) $*"; }

step "wheels from $WHEELS into $SITE"
rm -rf "$SITE" "$SITE-pb" "$KIT"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { echo "FAILED: pip could not install the carried wheels"; exit 2; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import tritonclient.grpc.model_config_pb2" 2>/dev/null; then
    echo "tritonclient's generated code refuses protobuf $("$PYTHON" -c 'import google.protobuf as p; print(p.__version__)'); using the carried one"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE-pb" "$WHEELS"/fallback/*.whl
    export PYTHONPATH="$SITE-pb:$PYTHONPATH"
fi

step "the kit as pyproject maps it: tritonkit.{export,clients,server,benchmarks} = ./{export,clients,server,benchmarks}"
mkdir -p "$KIT/tritonkit"
for f in tritonkit/*; do ln -s "$PWD/$f" "$KIT/tritonkit/"; done
for d in export clients server benchmarks; do ln -s "$PWD/$d" "$KIT/tritonkit/$d"; done
export PYTHONPATH="$KIT:$PYTHONPATH"
export PYTHONSAFEPATH=1  # `python -m` from the checkout would otherwise find ./tritonkit without its mapped parts
# The embedded server runs from this Python as it is (no network here to build its own environment): an
# environment the kit did not build is used as given, PYTHONPATH included (server/environment.py).
export TRITONKIT_SERVER_ENV="$("$PYTHON" -c 'import sys; print(sys.prefix)')"

step "the Python backend stub and its libpython"
VERSION=$("$PYTHON" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
STUB="$SITE/pytriton/tritonserver/python_backend_stubs/$VERSION/triton_python_backend_stub"
if ldd "$STUB" | grep -q "libpython$VERSION.*not found"; then
    LIBDIR=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')")
    FOUND=$(find "$LIBDIR" /usr/lib /usr/local/lib /opt /root -name "libpython$VERSION.so.1.0" 2>/dev/null | head -1)
    if [ -z "$FOUND" ]; then
        echo "FAILED: no libpython$VERSION.so.1.0 on this machine; the stub cannot start (the in-process numbers below still run)"
    else
        export LD_LIBRARY_PATH="$(dirname "$FOUND")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
fi
ldd "$STUB" | grep -E "python|cudart|not found"

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>/dev/null || echo "nvidia-smi: none"
nproc
"$PYTHON" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "numpy", "onnx", "onnxruntime", "google.protobuf", "grpc", "tritonclient", "pandas", "pyarrow"):
    try:
        module = importlib.import_module(name)
        print(f"{name:16} {getattr(module, '__version__', '?'):24} {module.__file__}")
    except Exception as e:  # a missing package is a finding, not a stop
        print(f"{name:16} MISSING ({type(e).__name__}: {e})")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

step "benchmark: python -m tritonkit.benchmarks.gpu --out $OUT $*"
PYTHONUNBUFFERED=1 timeout 330 "$PYTHON" -m tritonkit.benchmarks.gpu --out "$OUT" "$@"
BENCH=$?
echo "benchmark exit code $BENCH"

step "GPU-only integration test"
PYTHONUNBUFFERED=1 timeout 150 "$PYTHON" -m pytest -q -x -p no:cacheprovider \
    tests/integration/test_torchscript_served.py -k on_gpu_instance -rs
TEST=$?
echo "test exit code $TEST"
LOG="$OUT/triton.log"
if [ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -gt 8000000 ]; then  # what comes back from $OUT is capped per file
    { head -c 2000000 "$LOG"; echo; echo "[... cut to 6 MB by device-check.sh ...]"; tail -c 4000000 "$LOG"; } > "$LOG.cut"
    mv "$LOG.cut" "$LOG"
fi
step "done: $OUT"
ls -la "$OUT"
exit $(( BENCH != 0 ? BENCH : TEST ))
