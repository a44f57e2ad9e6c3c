#!/usr/bin/env bash
# Train the bundled tailored diffusion model (tiny configuration) of one bundled report generator.
#
#   scripts/train_bundled_diffusion.sh phantom-captioner      # or phantom-templater, phantom-shortcut
#
# Steps: a training phantom world -> `cvlm prepare` with the generator's own reports -> the VAE
# (`cvlm train --config vae`) -> the UNet + text encoder (`cvlm train --config tiny`, best validation
# reconstruction PSNR kept) -> `cvlm validate` on a fresh phantom world -> the model and its card in
# src/cvlm/bundled/diffusion/<generator>/.
#
# Settings (environment variables, defaults in brackets):
#   WORK [runs/bundled-diffusion/<generator>]   scratch folder (resumable: finished steps are skipped,
#                                                an interrupted training resumes from its checkpoint)
#   N_TRAIN [3000]  SEED [1000]                 training world size and seed (test world: SEED+1)
#   VAE [train one]                             a trained VAE folder to reuse (one VAE serves all
#                                                generators of the same world; it is the costly part)
#   INIT [none]                                 a trained tiny model to fine-tune from (brings its VAE,
#                                                UNet, text encoder and tokenizer; VAE is then ignored)
#   VAE_STEPS [1500]  STEPS [3000]  BATCH [32]  VAE_BATCH [16]  VAL_EVERY [250]
#   DECODER_STEPS [0]                           then fine-tune the VAE decoder this many steps
#   READER_VAE_STEPS [0]                        with INIT: first retrain INIT's VAE, encoder and decoder, this
#                                                many steps with the generator's reading term (cvlm train
#                                                --config vae --reader G), then its decoder alone for
#                                                READER_DECODER_STEPS [300] steps, and train the UNet on the new
#                                                latents (docs/diffusion.md, "A VAE trained to keep what G reads")
#   READER_LOSS [kl]  READER_WEIGHT [0.2]        the first VAE run's reading term (--reader-loss, --reader-weight)
#   READER_DECODER_WEIGHT [0.05]                 the decoder run's (same loss)
#   READER_VAE_LR [3e-4]  READER_DECODER_LR [1e-4]  READER_VAE_BATCH [8]
#   UNET_READER_WEIGHT [0]  UNET_READER_LOSS [kl]  the UNet's reading term (cvlm train --config tiny --reader G)
#   UNET_READER_MAX_T [500]                      ... over the samples noised below this timestep
#   UNET_CYCLE_WEIGHT [0]  UNET_CYCLE_LOCALITY [1]  the UNet's counterfactual term (cvlm train --cycle-weight,
#   UNET_CYCLE_PICK [uniform]                    --cycle-locality, --cycle-pick; same samples, UNET_READER_MAX_T)
#   UNET_CYCLE_LOCALITY_MAP [everywhere]         --cycle-locality-map: everywhere or outside-evidence
#   BALANCE [0]                                 repeat-factor sampling threshold (cvlm train --balance)
#   SNR_GAMMA [0]                               min-SNR-gamma loss weighting (cvlm train --snr-gamma)
#   LOW_T_SHARE [0], LOW_T_MAX [100]            share of samples noised below LOW_T_MAX (cvlm train --low-t-share)
#   PROMPT_DROPOUT [0.1]                        empty-prompt probability (cvlm train --prompt-dropout)
#   PROMPTS [generated]                         cvlm prepare --prompts: generated (tailored, CVLM), gt (the
#                                                world's own reports: the paper's "GT model"), raw (the
#                                                generator's report text as the prompt)
#   GROW_VOCABULARY [0]                         1: with INIT, prompt words its tokenizer lacks become new
#                                                tokens (cvlm train --grow-vocabulary; raw prompts)
#   PSNR_TOLERANCE [0.25]                       cvlm train --psnr-tolerance (0: the paper's strict best)
#   CONFIG [tiny]                               UNet configuration: tiny or a JSON file over it; with INIT,
#                                                its `unet` keys grow the init model's UNet (new modules
#                                                start as identities), e.g. configs/tiny-attn32.json
#   GROWN_LR_SCALE [1]                          learning-rate multiplier of those new modules
#   INDEPENDENT_MARK [0]                        1 (shortcut generators): the training worlds' mark is independent
#                                                of every finding (cvlm phantoms --independent-mark), so only the
#                                                generator's own findings can tie a word to the mark
#   DEVICE [auto]                               auto | cpu | cuda (bf16 autocast on a GPU)
#   LAUNCH ["python -m cvlm.cli"]               e.g. "accelerate launch -m cvlm.cli" for several GPUs
#   THREADS [2]                                 torch CPU threads
#   TEST_N [64]  TEST_STEPS [50]                 cvlm validate images and DDIM steps
#   DEST [src/cvlm/bundled/diffusion/<generator>] where the model and its card go
set -euo pipefail

G=${1:?usage: $0 GENERATOR_NAME}
WORK=${WORK:-runs/bundled-diffusion/$G}
N_TRAIN=${N_TRAIN:-3000}
SEED=${SEED:-1000}
VAE_STEPS=${VAE_STEPS:-1500}
DECODER_STEPS=${DECODER_STEPS:-0}
READER_VAE_STEPS=${READER_VAE_STEPS:-0}
READER_DECODER_STEPS=${READER_DECODER_STEPS:-300}
READER_LOSS=${READER_LOSS:-kl}
READER_WEIGHT=${READER_WEIGHT:-0.2}
READER_DECODER_WEIGHT=${READER_DECODER_WEIGHT:-0.05}
READER_VAE_LR=${READER_VAE_LR:-3e-4}
READER_DECODER_LR=${READER_DECODER_LR:-1e-4}
READER_VAE_BATCH=${READER_VAE_BATCH:-8}
UNET_READER_WEIGHT=${UNET_READER_WEIGHT:-0}
UNET_READER_LOSS=${UNET_READER_LOSS:-kl}
UNET_READER_MAX_T=${UNET_READER_MAX_T:-500}
UNET_CYCLE_WEIGHT=${UNET_CYCLE_WEIGHT:-0}
UNET_CYCLE_LOCALITY=${UNET_CYCLE_LOCALITY:-1}
UNET_CYCLE_PICK=${UNET_CYCLE_PICK:-uniform}
UNET_CYCLE_LOCALITY_MAP=${UNET_CYCLE_LOCALITY_MAP:-everywhere}
UNET_READER=()
if [[ $UNET_READER_WEIGHT != 0 || $UNET_CYCLE_WEIGHT != 0 ]]; then
  UNET_READER=(--reader "$G" --reader-weight "$UNET_READER_WEIGHT" --reader-loss "$UNET_READER_LOSS"
    --reader-max-t "$UNET_READER_MAX_T" --cycle-weight "$UNET_CYCLE_WEIGHT" --cycle-locality "$UNET_CYCLE_LOCALITY"
    --cycle-pick "$UNET_CYCLE_PICK" --cycle-locality-map "$UNET_CYCLE_LOCALITY_MAP")
fi
BALANCE=${BALANCE:-0}
SNR_GAMMA=${SNR_GAMMA:-0}
LOW_T_SHARE=${LOW_T_SHARE:-0}
LOW_T_MAX=${LOW_T_MAX:-100}
PROMPT_DROPOUT=${PROMPT_DROPOUT:-0.1}
PROMPTS=${PROMPTS:-generated}
PSNR_TOLERANCE=${PSNR_TOLERANCE:-0.25}
GROW=(); [[ ${GROW_VOCABULARY:-0} == 1 ]] && GROW=(--grow-vocabulary)
CONFIG=${CONFIG:-tiny}
GROWN_LR_SCALE=${GROWN_LR_SCALE:-1}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-32}
VAE_BATCH=${VAE_BATCH:-16}
VAL_EVERY=${VAL_EVERY:-250}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-2}
PY=${PY:-python}
LAUNCH=${LAUNCH:-$PY -m cvlm.cli}
TEST_N=${TEST_N:-64}
TEST_STEPS=${TEST_STEPS:-50}
DEST=${DEST:-src/cvlm/bundled/diffusion/$G}
SHORTCUT=()
[[ $G == *shortcut* ]] && SHORTCUT=(--shortcut)
[[ $G == *shortcut* && ${INDEPENDENT_MARK:-0} == 1 ]] && SHORTCUT+=(--independent-mark)
mkdir -p "$WORK"
T0=$(date +%s)
# The exact command, with the settings that differ from the defaults, for the model card.
COMMAND="scripts/train_bundled_diffusion.sh $G"
for v in WORK N_TRAIN SEED VAE INIT VAE_STEPS STEPS BATCH VAL_EVERY DECODER_STEPS READER_VAE_STEPS READER_DECODER_STEPS READER_LOSS READER_WEIGHT READER_DECODER_WEIGHT READER_VAE_LR READER_DECODER_LR READER_VAE_BATCH UNET_READER_WEIGHT UNET_READER_LOSS UNET_READER_MAX_T UNET_CYCLE_WEIGHT UNET_CYCLE_LOCALITY UNET_CYCLE_PICK UNET_CYCLE_LOCALITY_MAP BALANCE SNR_GAMMA LOW_T_SHARE LOW_T_MAX PROMPT_DROPOUT PROMPTS GROW_VOCABULARY PSNR_TOLERANCE CONFIG GROWN_LR_SCALE INDEPENDENT_MARK TEST_N TEST_STEPS; do
  [[ -n ${!v:-} ]] && COMMAND="$v=${!v} $COMMAND"
done

# 1. Worlds: training images for the tailored data set, and a fresh one for validation.
[[ -f $WORK/world/world.json ]] || $PY -m cvlm.cli phantoms --out "$WORK/world" --n "$N_TRAIN" --seed "$SEED" "${SHORTCUT[@]}"
[[ -f $WORK/test-world/world.json ]] || $PY -m cvlm.cli phantoms --out "$WORK/test-world" --n 200 --seed $((SEED + 1)) "${SHORTCUT[@]}"

# 2. The generator's own prompts.
[[ -f $WORK/prepared/manifest.jsonl ]] || $PY -m cvlm.cli prepare --generator "$G" --data "$WORK/world" --out "$WORK/prepared" \
  --prompts "$PROMPTS"

# 3. The VAE (trained on the world's images, then frozen), unless one is given.
resume() { [[ -d $1/checkpoints ]] && echo --resume || true; }
finished() { [[ -f $1/train.json ]] && grep -q '"finished": true' "$1/train.json"; }
# 3a. Optional, with INIT: a VAE that keeps what the generator reads. Phase 1 retrains encoder and decoder
#     with the reading term (the latents learn the thin lines); phase 2 the decoder alone (those latents
#     stay) at a lower rate, which brings the pixels back. INIT with this VAE becomes the stage's start.
if (( READER_VAE_STEPS > 0 )); then
  [[ -n ${INIT:-} ]] || { echo "READER_VAE_STEPS needs INIT (the model whose VAE is retrained)" >&2; exit 2; }
  READ_COMMON=(--data "$WORK/prepared" --batch-size "$READER_VAE_BATCH" --vae-crop 128 --warmup 20 --val-every 100
    --checkpoint-every 100 --val-n 32 --reader "$G" --reader-loss "$READER_LOSS" --device "$DEVICE" --threads "$THREADS")
  finished "$WORK/vae-reader" ||
    $LAUNCH train --config vae --vae "$INIT/vae" --out "$WORK/vae-reader" --steps-max "$READER_VAE_STEPS" \
      --lr "$READER_VAE_LR" --reader-weight "$READER_WEIGHT" "${READ_COMMON[@]}" $(resume "$WORK/vae-reader")
  finished "$WORK/vae-reader-decoder" ||
    $LAUNCH train --config vae --vae "$WORK/vae-reader/last" --decoder-only --out "$WORK/vae-reader-decoder" \
      --steps-max "$READER_DECODER_STEPS" --lr "$READER_DECODER_LR" --reader-weight "$READER_DECODER_WEIGHT" \
      "${READ_COMMON[@]}" $(resume "$WORK/vae-reader-decoder")
  rm -rf "$WORK/init-reader"
  cp -r "$INIT" "$WORK/init-reader"
  cp "$WORK/vae-reader-decoder/last/config.json" "$WORK/vae-reader-decoder/last/diffusion_pytorch_model.safetensors" \
    "$WORK/init-reader/vae/"
  INIT=$WORK/init-reader
  CARD_VAE=$WORK/vae-reader-decoder
fi
if [[ -n ${INIT:-} ]]; then
  VAE=$INIT/vae
  START=(--init "$INIT")
elif [[ -z ${VAE:-} ]]; then
  VAE=$WORK/vae
  [[ -f $VAE/train.json ]] && grep -q '"finished": true' "$VAE/train.json" ||
    $LAUNCH train --config vae --data "$WORK/prepared" --out "$VAE" --steps-max "$VAE_STEPS" \
      --batch-size "$VAE_BATCH" --val-every "$VAL_EVERY" --checkpoint-every "$VAL_EVERY" --val-n 32 \
      --device "$DEVICE" --threads "$THREADS" $(resume "$VAE")
fi
[[ -n ${INIT:-} ]] || START=(--vae "$VAE")

# 4. UNet + text encoder; the checkpoint with the best validation reconstruction PSNR is the model.
[[ -f $WORK/model/train.json ]] && grep -q '"finished": true' "$WORK/model/train.json" ||
  $LAUNCH train --config "$CONFIG" --data "$WORK/prepared" "${START[@]}" --out "$WORK/model" --steps-max "$STEPS" \
    --batch-size "$BATCH" --val-every "$VAL_EVERY" --checkpoint-every "$VAL_EVERY" --val-n 16 --half \
    --balance "$BALANCE" --snr-gamma "$SNR_GAMMA" --low-t-share "$LOW_T_SHARE" --low-t-max "$LOW_T_MAX" --prompt-dropout "$PROMPT_DROPOUT" \
    --grown-lr-scale "$GROWN_LR_SCALE" --psnr-tolerance "$PSNR_TOLERANCE" "${GROW[@]}" "${UNET_READER[@]}" \
    --device "$DEVICE" --threads "$THREADS" $(resume "$WORK/model")

# 4b. Optional: fine-tune the VAE decoder (encoder frozen, so the UNet's latents stay valid) and swap
#     it into the model; reconstruction PSNR is capped by the VAE's (docs/diffusion.md).
if (( DECODER_STEPS > 0 )); then
  [[ -f $WORK/vae-decoder/train.json ]] && grep -q '"finished": true' "$WORK/vae-decoder/train.json" ||
    $LAUNCH train --config vae --vae "$VAE" --decoder-only --data "$WORK/prepared" --out "$WORK/vae-decoder" \
      --steps-max "$DECODER_STEPS" --batch-size "$VAE_BATCH" --warmup 20 --val-every "$VAL_EVERY" \
      --checkpoint-every "$VAL_EVERY" --val-n 32 --half --device "$DEVICE" --threads "$THREADS" $(resume "$WORK/vae-decoder")
  cp "$WORK/vae-decoder/config.json" "$WORK/vae-decoder/diffusion_pytorch_model.safetensors" "$WORK/model/vae/"
fi

# 5. Validation on the fresh world (reconstruction PSNR / SSIM, VAE PSNR, edit ratios).
VALIDATION_DEVICE=$DEVICE; [[ $DEVICE == auto ]] && VALIDATION_DEVICE=cpu
$PY -m cvlm.cli validate --model "$WORK/model" --data "$WORK/test-world" --n "$TEST_N" --steps "$TEST_STEPS" \
  --device "$VALIDATION_DEVICE" --out "$WORK/validation.json"

# 6. The bundled copy and its card (an --init model's card is kept in it as history).
PREVIOUS=()
if [[ -n ${INIT:-} && -f $INIT/README.md ]]; then
  cp "$INIT/README.md" "$WORK/init-card.md"
  PREVIOUS=(--previous-card "$WORK/init-card.md")
fi
$PY -m cvlm.diffusion.card --model "$WORK/model" --vae "${CARD_VAE:-$VAE}" --validation "$WORK/validation.json" \
  --generator "$G" --out "$DEST" --command "$COMMAND" "${PREVIOUS[@]}"
echo "bundled model: $DEST ($(du -sh "$DEST" | cut -f1)); total $(( ($(date +%s) - T0) / 60 )) min"
