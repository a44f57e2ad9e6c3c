#!/usr/bin/env bash
# Train every bundled model of cvlm from the phantom world with the project's own commands: the three report
# generators (scripts/train_bundled_generators.sh: the exact staged recipe of their model cards), then one
# tailored diffusion model per generator (scripts/train_bundled_diffusion.sh: world -> cvlm prepare with the
# generator's own reports -> VAE -> UNet + text encoder -> cvlm validate -> model card).
#
#   bash scripts/train_bundled.sh             # CPU: several hours on 2 cores
#   DEVICE=cuda bash scripts/train_bundled.sh # a GPU
#
# Settings are those of the two scripts (environment variables); the generators' scripts reads DEVICE too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/train_bundled_generators.sh
for G in phantom-templater phantom-captioner phantom-shortcut; do
  DEVICE=${DEVICE:-auto} bash scripts/train_bundled_diffusion.sh "$G"
done
