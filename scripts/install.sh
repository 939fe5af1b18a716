#!/usr/bin/env bash
# Install everything online-rlhf needs on a fresh Debian machine (root, Python 3.11).
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# Debian packages: redis-server (the local stack and tests) and promtool (from `prometheus`:
# the deploy tests check the alert rules and run their unit tests with it).
APT_PKGS=()
command -v redis-server >/dev/null 2>&1 || APT_PKGS+=(redis-server)
command -v promtool >/dev/null 2>&1 || APT_PKGS+=(prometheus)
if [ ${#APT_PKGS[@]} -gt 0 ]; then
  echo "[install] installing from Debian: ${APT_PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
fi

# torch first and pinned: a constraint keeps every later install from replacing it
# (a plain `torch` requirement would pull a multi-GB CUDA build).
CONSTRAINTS=$(mktemp)
echo "torch==2.13.0" > "$CONSTRAINTS"
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -e ".[test,deploy-test]"
rm -f "$CONSTRAINTS"
$PY -c "import torch, rlhf.v1.chat_pb2; print('[install] ok: torch', torch.__version__)"
