#!/usr/bin/env bash
# Makes the Python virtual environment tests/server.rs runs the `openai` client from:
# target/server-venv (or $BONSAI_SERVER_VENV). Idempotent; installs Debian's python3-venv when
# venv/ensurepip are missing and we are root (CI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
VENV=${BONSAI_SERVER_VENV:-target/server-venv}
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    else
        echo "python3 lacks venv/ensurepip: install python3-venv" >&2
        exit 1
    fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<4'
"$VENV/bin/python" -c 'import openai; print("openai", openai.__version__, "in '"$VENV"'")'
