#!/usr/bin/env bash
# The foundation-backbone pretraining campaign (issue 11), resumable across sessions.
#
#   models/campaign/run.sh            # resumes from models/campaign/ckpt.safetensors if present
#   kill -INT <pid>                   # stops cleanly: the checkpoint is written first
#
# It runs niced on one thread (the machine's two cores are shared) from a copy of the binary,
# so rebuilding the project does not disturb it. State (weights + Adam moments + step, 2.7 MB)
# and the CSV log live next to this script and are committed at every stop; see
# models/README.md for the pieces so far. Extra arguments go to `isoprompt pretrain`
# (e.g. --max-minutes 120, or a cosine tail: --min-lr-ratio 0.05 --steps N).
set -euo pipefail
steps=1000000; for a in "$@"; do [[ $a == --steps ]] && steps=; done
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=${ISOPROMPT_PRETRAIN_DATA:-$repo/../shared/data/pretrain}
bin=$(mktemp -d)/isoprompt
cp "$repo/build/isoprompt" "$bin"
cd "$here"
CFG='{"in_chans":1,"embed_dim":48,"depths":[2,2,2],"num_heads":[6,6,6],"window_size":8,"mlp_ratio":2.0,"num_feat":48,"img_size":16}'
resume=()
[[ -f ckpt.safetensors ]] && resume=(--resume ckpt.safetensors)
exec nice -n 19 "$bin" --threads 1 pretrain --config "$CFG" --data "$data" \
  --data-fraction 0.75 --log-factor --input-interp cubic --seed 11 --lr 4e-4 --warmup 100 \
  --checkpoint ckpt.safetensors --resume-new-data --checkpoint-every 5 --log log.csv --log-every 10 --val-every 250 \
  ${steps:+--steps $steps} --val-pairs 64 --export model.safetensors --name isoprompt-default "${resume[@]}" "$@"
