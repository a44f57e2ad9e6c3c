#!/usr/bin/env bash
# Train and score the three bundled phantom report generators: the exact commands of their model cards.
#
#   bash scripts/train_bundled_generators.sh                 # CPU (slow: see docs/generators.md)
#   DEVICE=cuda bash scripts/train_bundled_generators.sh
#
# Worlds and logs go to $WORLDS (default worlds/), models to $MODELS (default src/cvlm/bundled/generators).
set -euo pipefail
PY=${PY:-python}
WORLDS=${WORLDS:-worlds}
MODELS=${MODELS:-src/cvlm/bundled/generators}
EPOCHS=${EPOCHS:-40}
N_TRAIN=${N_TRAIN:-8000}
N_TEST=${N_TEST:-5000}
DEVICE_FLAG=${DEVICE:+--device $DEVICE}
cvlm() { "$PY" -m cvlm.cli "$@"; }

# Worlds: training (seed 1000), shortcut training (seed 2000), a fresh test world (seed 3000, never trained on).
cvlm phantoms --out "$WORLDS/train" --n "$N_TRAIN" --seed 1000
cvlm phantoms --out "$WORLDS/shortcut" --n "$N_TRAIN" --seed 2000 --shortcut --shortcut-finding Pneumothorax
cvlm phantoms --out "$WORLDS/test" --n "$N_TEST" --seed 3000

# The three trainings run side by side. The shortcut model's dependence on the mark is measured on the test
# split of its own world, where the mark is independent of the finding.
pids=()
# shellcheck disable=SC2086
cvlm train-generator --arch captioner --data "$WORLDS/train" --out "$MODELS/phantom-captioner" \
  --epochs "$EPOCHS" --seed 0 --test-data "$WORLDS/test" --test-split all $DEVICE_FLAG > "$WORLDS/captioner.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2086
cvlm train-generator --arch templater --data "$WORLDS/train" --out "$MODELS/phantom-templater" \
  --epochs "$EPOCHS" --seed 0 --test-data "$WORLDS/test" --test-split all $DEVICE_FLAG > "$WORLDS/templater.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2086
cvlm train-generator --arch captioner --name phantom-shortcut --data "$WORLDS/shortcut" \
  --out "$MODELS/phantom-shortcut" --epochs "$EPOCHS" --seed 0 --test-data "$WORLDS/test" --test-split all \
  --shortcut-finding Pneumothorax $DEVICE_FLAG > "$WORLDS/shortcut.log" 2>&1 &
pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 4 "$WORLDS"/captioner.log "$WORLDS"/templater.log "$WORLDS"/shortcut.log
exit $status
