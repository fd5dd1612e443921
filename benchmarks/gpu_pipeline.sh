#!/usr/bin/env bash
# The GPU evidence of the training and prediction issues in one run on one GPU machine, within DEADLINE seconds
# from the start (install included), in this order of worth:
#  0. the suite's CUDA tests, which CI (no GPU) skips: the GPU's predictions against the CPU's (about 20 s);
#  1. the shipped paper preset end to end through snakemake on ISBI 2012 from a loopback server (the real download
#     rule): ingest, weight maps, augment, train, predict with TTA as shipped, evaluation of the held-out sections,
#     prediction of the challenge's test volume; then each rule's time, the predict stage's own time per volume, the
#     training loop's tiles/s and the held-out scores (pipeline_figures.py);
#  2. the bare training step of the same preset (train_speed.py), beside the loop's tiles/s;
#  3. prediction (predict_speed.py, a random network of the preset, the same tile, batch and precision for every
#     side): the ISBI-sized volume with TTA and without, LARGE against MONAI and the bare network, then the
#     0.5 GB HALF_GB with TTA and without.
# Each step has a time limit, cut to what is left before the deadline, so that one failure or overrun does not hide
# the figures of the others.
#
#     bash benchmarks/gpu_wheels.sh                     # here, once: .whl (snakemake, zarr, dask, MONAI) and
#                                                       # .isbi (the ISBI stacks, packed), both to carry
#     bash benchmarks/gpu_pipeline.sh [CORES]           # there; CORES default: all
#
# Through this workplace's device tool: carry .whl and .isbi, and run
# `KEEP=$OUT bash benchmarks/gpu_pipeline.sh 16 2>&1 | tee $OUT/gpu_pipeline.log` with timeout_s 600.
#
# On the 2026-12-04 H200 the paper preset's train rule alone took 285 s (20000 steps at 90 tiles/s), so the
# workflow needs about 7 of the 10 minutes a device call may run; steps 2 and 3 fill what is left.
#
# Environment: ISBI (folder of the three ISBI TIFF stacks, default ../shared/data/isbi2012 or $UNET_SHARED_DATA;
# where it is missing, .isbi/isbi2012.tar.gz of gpu_wheels.sh is unpacked in its place),
# PRESET (default paper), OVERLAY (a further config file, e.g. fewer iterations for a CPU smoke test of this
# script), DEADLINE (default 570 s), PIPELINE_LIMIT (default 480 s), LARGE (default "4 8192 8192"), HALF_GB
# (default "2 16384 16384"), TILE (default 508) and BATCH (default 8) for step 3, KEEP (a folder: on exit, the
# run's logs, rule benchmarks and summaries go there as results.tgz, for a machine whose files come back only from
# one folder, e.g. KEEP=$OUT under a 600-s device call).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$(date +%s)
cores=${1:-$(nproc)}
preset=${PRESET:-paper}
isbi=${ISBI:-${UNET_SHARED_DATA:-../shared/data/isbi2012}}
deadline=$((start + ${DEADLINE:-570}))
results=results-gpu-pipeline
export PYTHONUNBUFFERED=1

# step LIMIT COMMAND...: COMMAND under LIMIT seconds or what is left before the deadline, whichever is less
step() {
    local limit=$1 left=$((deadline - $(date +%s)))
    shift
    ((left < limit)) && limit=$left
    if ((limit < 10)); then
        echo "skipped, deadline reached: $*"
        return
    fi
    echo "\$ $*  (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" || echo "(exit $?)"
}

if [[ ! -d $isbi && -f .isbi/isbi2012.tar.gz ]]; then
    isbi=$(mktemp -d)
    tar xzf .isbi/isbi2012.tar.gz -C "$isbi"
fi
source benchmarks/gpu_env.sh
echo "install: $(($(date +%s) - start)) s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
cuda_tests=(tests/models/test_unet.py::test_a_gpu_predicts_what_the_cpu_predicts
    tests/inference/test_device_path.py::test_a_gpu_predicts_on_the_device_path_what_the_cpu_predicts_on_the_host)
step 60 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rs "${cuda_tests[@]}"

port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$isbi" > /dev/null 2>&1 &
server=$!
# the small files of the run (logs, rule benchmarks, summaries, training curves), wherever it stopped; from the
# project root, since the trap runs after the benchmarks' `cd`
keep() {
    cd "$root" || return 0
    [[ -n ${KEEP:-} && -d $results ]] || return 0
    find "$results" .snakemake/log \( -name '*.log' -o -name '*.tsv' -o -name '*.json' -o -name '*.csv' \) \
        -not -path '*.zarr/*' -size -2M -print0 | tar czf "$KEEP/results.tgz" --null -T -
}
trap 'kill $server 2> /dev/null || true; keep' EXIT
mkdir -p "$results"
cat > "$results/overlay.yaml" << EOT
results: $results
preset: $preset
datasets:
  isbi2012: {base: "http://127.0.0.1:$port"}
  isbi2012_test: {base: "http://127.0.0.1:$port"}
EOT
targets=("$results/isbi2012/evaluation/$preset/summary.json" "$results/isbi2012_test/predictions/$preset.zarr")
# --resources gpu=1: one GPU job at a time, so that each predict stage's time is its own
step "${PIPELINE_LIMIT:-480}" python3 -m snakemake --cores "$cores" --resources gpu=1 \
    --configfile config/config.yaml "$results/overlay.yaml" ${OVERLAY:+"$OVERLAY"} -- "${targets[@]}"
echo "workflow: $(($(date +%s) - start)) s from the start, install included"
python3 benchmarks/pipeline_figures.py "$results" "$preset"

cd benchmarks
step 45 python3 train_speed.py --presets "$preset" --amp bf16 --variants channels_last --steps 100
prediction=(--preset "$preset" --input-size "${TILE:-508}" --batch-size "${BATCH:-8}")
step 40 python3 predict_speed.py "${prediction[@]}" --shape 30 512 512 --sides stage --tta
# shellcheck disable=SC2086 # the shapes are three numbers each
step 90 python3 predict_speed.py "${prediction[@]}" --shape ${LARGE:-4 8192 8192}
# shellcheck disable=SC2086
step 240 python3 predict_speed.py "${prediction[@]}" --shape ${HALF_GB:-2 16384 16384} --sides stage --tta
echo "all: $(($(date +%s) - start)) s"
