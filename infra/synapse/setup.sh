#!/usr/bin/env bash
# Install the Synapse homeserver used by the Matrix tests into its own venv.
# Synapse pins its own dependencies; keeping it out of the project's .venv keeps both installable.
# Idempotent: a second run with a working install does nothing (about 0.3 s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${SYNAPSE_VENV:-$ROOT/.venv-synapse}"
PY="${PYTHON:-python3}"
SPEC="${SYNAPSE_SPEC:-matrix-synapse>=1.120}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import synapse" 2>/dev/null; then
    exit 0
fi
echo "Installing Synapse into $VENV (once, ~30 s)..." >&2
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SPEC"
"$VENV/bin/python" -c "import synapse; print('synapse', synapse.__version__)" >&2
