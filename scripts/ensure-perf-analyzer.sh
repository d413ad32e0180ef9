#!/usr/bin/env bash
# Makes sure `perf_analyzer` (Triton's own load generator, 2.51 to match the embedded server) runs from the venv.
#
# PyPI has no usable perf_analyzer package, but the tritonclient 2.51.0 wheel carries the binary
# (tritonclient-2.51.0.data/data/bin/perf_analyzer). This script, when anything is missing:
#   - apt-installs libb64-0d (libb64.so.0d, which the binary links against);
#   - downloads that wheel into a temporary folder and extracts the binary to $VENV/libexec/perf_analyzer;
#   - pip-installs nvidia-cuda-runtime-cu12 into the venv (libcudart.so.12: linked, not used, on a CPU machine);
#   - writes $VENV/bin/perf_analyzer, a wrapper that puts that library folder on LD_LIBRARY_PATH and execs it.
# Quiet unless it fails; safe to run repeatedly (does nothing when all is in place). Nothing lands in the repo.
#
#   VENV=.venv bash scripts/ensure-perf-analyzer.sh
set -euo pipefail

VERSION=2.51.0
GIVEN="${VENV:-.venv}"
VENV="$(cd "$GIVEN" 2>/dev/null && pwd)" || { echo "ensure-perf-analyzer: no venv at $GIVEN; run make install" >&2; exit 1; }
PY="$VENV/bin/python"
BINARY="$VENV/libexec/perf_analyzer"
WRAPPER="$VENV/bin/perf_analyzer"

fail() { echo "ensure-perf-analyzer: $*" >&2; exit 1; }

log="$(mktemp)"
tmp="$(mktemp -d)"
trap 'rm -rf "$log" "$tmp"' EXIT
quietly() {  # runs "$@" with its output in $log; on failure shows the end of it and stops
    local what="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        echo "ensure-perf-analyzer: $what failed:" >&2
        grep -v "is neither a file nor a directory" "$log" | tail -n 20 >&2
        exit 1
    fi
}

cudart_dir() {  # the folder of libcudart.so.12 inside the venv, or nothing
    "$PY" - <<'EOF' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("nvidia.cuda_runtime")
if spec and spec.submodule_search_locations:
    lib = pathlib.Path(next(iter(spec.submodule_search_locations))) / "lib"
    if (lib / "libcudart.so.12").exists():
        print(lib)
EOF
}

has_libb64() { ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; }

# 1. libb64 (Debian)
if ! has_libb64; then
    command -v apt-get >/dev/null 2>&1 || fail "libb64.so.0d is missing and apt-get is not available; install libb64-0d by hand"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fail "libb64.so.0d is missing and installing libb64-0d needs root (or sudo)"
        SUDO="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
    quietly "apt-get install libb64-0d" bash -c "$SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends libb64-0d"
    has_libb64 || fail "libb64-0d installed but libb64.so.0d is still not known to the loader"
fi

# 2. libcudart.so.12 (PyPI, into the venv)
lib="$(cudart_dir)"
if [ -z "$lib" ]; then
    quietly "pip install nvidia-cuda-runtime-cu12" "$PY" -m pip install --quiet --disable-pip-version-check "nvidia-cuda-runtime-cu12>=12,<13"
    lib="$(cudart_dir)"
    [ -n "$lib" ] || fail "nvidia-cuda-runtime-cu12 installed but libcudart.so.12 was not found in it"
fi

# 3. the binary, out of the tritonclient wheel
if [ ! -x "$BINARY" ]; then
    quietly "pip download tritonclient==$VERSION" "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --platform manylinux1_x86_64 "tritonclient==$VERSION" -d "$tmp"
    wheel="$(ls "$tmp"/tritonclient-"$VERSION"-*.whl 2>/dev/null | head -n 1)"
    [ -n "$wheel" ] || fail "pip download gave no tritonclient $VERSION wheel"
    mkdir -p "$VENV/libexec"
    quietly "extracting perf_analyzer from $(basename "$wheel")" "$PY" - "$wheel" "$BINARY" <<'EOF'
import os, shutil, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
member = next((n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".data/data/bin/perf_analyzer")), None)
if member is None:
    sys.exit(f"{wheel} has no .data/data/bin/perf_analyzer")
with zipfile.ZipFile(wheel).open(member) as source, open(target + ".part", "wb") as out:
    shutil.copyfileobj(source, out)
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
EOF
fi

# 4. the wrapper (rewritten every time: cheap, and it follows the venv if it moved)
cat >"$WRAPPER.part" <<EOF
#!/usr/bin/env bash
# perf_analyzer $VERSION from the tritonclient wheel; written by scripts/ensure-perf-analyzer.sh.
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$BINARY" "\$@"
EOF
chmod +x "$WRAPPER.part"
mv -f "$WRAPPER.part" "$WRAPPER"

# 5. it links and starts
missing="$(LD_LIBRARY_PATH="$lib" ldd "$BINARY" 2>/dev/null | grep 'not found' || true)"
[ -z "$missing" ] || fail "perf_analyzer still lacks libraries: $missing"
"$WRAPPER" --version >"$log" 2>&1 || { tail -n 5 "$log" >&2; fail "$WRAPPER --version failed"; }
