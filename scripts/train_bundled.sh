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
D=src/cvlm/bundled/diffusion
export DEVICE=${DEVICE:-auto}
# First stage: the templater's model trains the VAE that all three share; the captioner's reuses it (the
# shortcut generator's starts from the templater's final model, at the end).
STEPS=1500 bash scripts/train_bundled_diffusion.sh phantom-templater
STEPS=1500 VAE=runs/bundled-diffusion/phantom-templater/vae bash scripts/train_bundled_diffusion.sh phantom-captioner
# Second stage of the honest generators' models: 1500 more steps on a fresh world's prompts written by the
# retrained generators (the edit response keeps improving with steps long after the PSNR has saturated).
for G in phantom-templater phantom-captioner; do
  SEED=$([[ $G == phantom-templater ]] && echo 1100 || echo 1200)
  WORK=runs/bundled-diffusion/$G-2 INIT=$D/$G SEED=$SEED STEPS=1500 bash scripts/train_bundled_diffusion.sh "$G"
done
# Third stage of the honest generators' models: 1500 more steps on a world rendered after fractures were made
# visible (a wider break, a step of a rib width, dense fragment ends), with prompts of the retrained templater
# and of the new captioner (started from the templater's encoder).
for G in phantom-templater phantom-captioner; do
  SEED=$([[ $G == phantom-templater ]] && echo 1300 || echo 1400)
  WORK=runs/bundled-diffusion/$G-3 INIT=$D/$G SEED=$SEED STEPS=1500 bash scripts/train_bundled_diffusion.sh "$G"
done
# Fourth stage of the templater's model (its pneumothorax and cardiomegaly edits were still the weakest).
WORK=runs/bundled-diffusion/phantom-templater-4 INIT=$D/phantom-templater SEED=1500 STEPS=1500 \
  bash scripts/train_bundled_diffusion.sh phantom-templater
# Fifth and sixth stages of the templater's model and fourth of the captioner's: fresh worlds of 12,000 images
# (the earlier stages saw 3,000-image worlds about 20 times each) with repeat-factor sampling of the rare
# findings (--balance 0.5); the pneumothorax, pleural-other and fracture edits were the weakest.
for SEED in 1700 1900; do
  WORK=runs/bundled-diffusion/phantom-templater-$(( SEED == 1700 ? 5 : 6 )) INIT=$D/phantom-templater N_TRAIN=12000 \
    SEED=$SEED STEPS=1500 BALANCE=0.5 bash scripts/train_bundled_diffusion.sh phantom-templater
done
WORK=runs/bundled-diffusion/phantom-captioner-4 INIT=$D/phantom-captioner N_TRAIN=12000 SEED=1800 STEPS=1500 \
  BALANCE=0.5 bash scripts/train_bundled_diffusion.sh phantom-captioner
# The shortcut generator's model: from the templater's final model (same prompt vocabulary), 1500 steps on the
# shortcut generator's own prompts for a world whose mark is independent of every finding, so that only the
# generator's findings can tie "pneumothorax" to the mark (docs/RESULTS.md, tailored versus GT on the shortcut world).
WORK=runs/bundled-diffusion/phantom-shortcut-independent INDEPENDENT_MARK=1 INIT=$D/phantom-templater STEPS=1500 \
  bash scripts/train_bundled_diffusion.sh phantom-shortcut
# Reader stage of the captioner's model (fifth stage; issue 16, docs/diffusion.md "A VAE trained to keep what G
# reads"): its VAE retrained so that the captioner reads the round trip as it reads the input (600 steps, encoder and
# decoder, logit reading term), then its decoder alone (300 steps), then 500 UNet steps on the new latents, on the
# first stage's world (seed 1000).
WORK=runs/bundled-diffusion/phantom-captioner-5 INIT=$D/phantom-captioner READER_VAE_STEPS=600 READER_LOSS=logit \
  READER_WEIGHT=0.005 READER_DECODER_WEIGHT=0.002 STEPS=500 BALANCE=0.5 bash scripts/train_bundled_diffusion.sh phantom-captioner
# Low-timestep stage of both honest generators' models (the captioner's sixth, the templater's seventh; issue 16,
# docs/diffusion.md "Training where the thin signs' words act"): 300 steps with 80 % of the samples' timesteps
# below t = 100, on the first stage's world (seed 1000). The bundled cards ran it with WORK=...-6 scratch folders
# (the name of the scratch folder only; here -lowt, since the templater's -6 is its sixth stage above); THREADS=1
# as there, so that from the same start the stage gives bit for bit the same weights.
for G in phantom-captioner phantom-templater; do
  WORK=runs/bundled-diffusion/$G-lowt INIT=$D/$G STEPS=300 VAL_EVERY=300 BALANCE=0.5 LOW_T_SHARE=0.8 LOW_T_MAX=100 THREADS=1 \
    bash scripts/train_bundled_diffusion.sh "$G"
done
bash scripts/calibrate_trust.sh
bash scripts/calibrate_frames.sh
