#!/usr/bin/env bash
# Write trust.json into every bundled tailored diffusion model: how it inverts phantom images it never
# trained on (z_T spread, reconstruction PSNR at T=50). `cvlm explain` flags inputs far from it.
#   scripts/calibrate_trust.sh        (N [60] images; worlds of seed 8100, and 8500 with --shortcut)
set -euo pipefail
PY=${PY:-python}
N=${N:-60}
WORK=${WORK:-runs/trust}
[[ -f $WORK/world/world.json ]] || $PY -m cvlm.cli phantoms --out "$WORK/world" --n "$N" --seed 8100
[[ -f $WORK/shortcut-world/world.json ]] || $PY -m cvlm.cli phantoms --out "$WORK/shortcut-world" --n "$N" --seed 8500 --shortcut
for G in phantom-captioner phantom-templater phantom-shortcut; do
  DATA=$WORK/world
  [[ $G == *shortcut* ]] && DATA=$WORK/shortcut-world
  $PY -c "import json, sys; from cvlm.explain import calibrate_trust; print(json.dumps(calibrate_trust(sys.argv[1], sys.argv[2], int(sys.argv[3]))))" "$G" "$DATA" "$N"
done
