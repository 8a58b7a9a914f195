#!/usr/bin/env bash
# sieve on Slurm: the same five steps as scripts/ray/sieve_ray.py, as job arrays chained with
# --dependency=afterok. Submit from a login node; OUT must be on a filesystem every node shares
# and `sieve` (the CUDA build, scripts/build-cuda.sh) on every node's PATH.
#
#   scripts/slurm/sieve_array.sh 'shards/{00000..00999}.tar' /shared/runs/laion 64 50000 64 [MODEL]
#                                 INPUT                        OUT                N  K     P
#
#   N embed tasks (one GPU each)  sieve embed INPUT --shard i/N --out OUT/shards/i
#   1 merge task                  sieve merge OUT/shards/* --out OUT/run
#   1 centroids task (one GPU)    sieve dedup-centroids OUT/run --clusters K
#   P partition tasks (one GPU)   sieve dedup-partition OUT/run --partition j/P
#   1 combine task                sieve dedup-combine OUT/run  -> OUT/run/dedup/
#
# A failed array task is rerun with the same command (sbatch --array=<failed ids> ...): sieve
# embed resumes from its last whole part, and a partition rewrites the same bytes. Not run here
# (no Slurm on the development machine); the commands are those the Ray test runs.
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,10p' "$0"; exit 2; }
INPUT=$1 OUT=$2 N=$3 K=$4 P=$5 MODEL=${6:-openai/clip-vit-base-patch32}
SBATCH=(sbatch --parsable --job-name=sieve --output="$OUT/logs/%x-%A_%a.log")
mkdir -p "$OUT/logs" "$OUT/shards"

embed=$("${SBATCH[@]}" --array=0-$((N - 1)) --gres=gpu:1 --cpus-per-task=16 --mem=64G --time=12:00:00 --wrap "
  i=\$SLURM_ARRAY_TASK_ID
  sieve embed -q '$INPUT' --out $OUT/shards/\$(printf %05d \$i) --shard \$i/$N --model '$MODEL'")

shards=$(for i in $(seq 0 $((N - 1))); do printf "$OUT/shards/%05d " "$i"; done)
merge=$("${SBATCH[@]}" --dependency=afterok:"$embed" --cpus-per-task=4 --mem=16G --time=4:00:00 --wrap "
  sieve merge -q $shards --out $OUT/run --overwrite")

centroids=$("${SBATCH[@]}" --dependency=afterok:"$merge" --gres=gpu:1 --cpus-per-task=16 --mem=128G --time=2:00:00 --wrap "
  rm -rf $OUT/run/dedup/partitions
  sieve dedup-centroids -q $OUT/run --clusters $K --out $OUT/run/dedup/centroids")

parts=$("${SBATCH[@]}" --dependency=afterok:"$centroids" --array=0-$((P - 1)) --gres=gpu:1 --cpus-per-task=16 --mem=128G --time=4:00:00 --wrap "
  sieve dedup-partition -q $OUT/run --centroids $OUT/run/dedup/centroids --partition \$SLURM_ARRAY_TASK_ID/$P --out $OUT/run/dedup/partitions")

combine=$("${SBATCH[@]}" --dependency=afterok:"$parts" --cpus-per-task=16 --mem=128G --time=2:00:00 --wrap "
  sieve dedup-combine $OUT/run --partitions $OUT/run/dedup/partitions")

echo "submitted: embed $embed (array of $N), merge $merge, centroids $centroids, partitions $parts (array of $P), combine $combine"
