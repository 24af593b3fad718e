#!/usr/bin/env bash
# The input-interpolation ablation of models/README.md (issue 11 item 4): a from-scratch run
# identical to the campaign's settings but for --input-interp, 600 steps.
#
#   models/campaign/ablation_input_interp.sh keys|cubic OUTDIR
#
# Compare the val_psnr_output column of OUTDIR/log.csv between the two runs: both validate
# on the same 576 pairs. One niced thread, about 30 minutes on the 2-core VM.
set -euo pipefail
interp=${1:?keys or cubic}; out=${2:?output directory}
repo=$(cd "$(dirname "$0")/../.." && pwd)
data=${ISOPROMPT_PRETRAIN_DATA:-$repo/../shared/data/pretrain}
mkdir -p "$out"; cd "$out"
CFG='{"in_chans":1,"embed_dim":48,"depths":[2,2,2],"num_heads":[6,6,6],"window_size":8,"mlp_ratio":2.0,"num_feat":48,"img_size":16}'
exec nice -n 19 "$repo/build/isoprompt" --threads 1 pretrain --config "$CFG" --data "$data" \
  --data-fraction 0.75 --log-factor --input-interp "$interp" --seed 11 --lr 4e-4 --warmup 100 \
  --steps 600 --min-lr-ratio 0.05 --checkpoint ckpt.safetensors --checkpoint-every 5 \
  --log log.csv --log-every 10 --val-every 100 --val-pairs 64 --export model.safetensors --name "ablation-$interp"
