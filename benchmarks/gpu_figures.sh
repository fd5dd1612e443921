#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one run (about 4 minutes on an H200):
#
#     bash benchmarks/gpu_figures.sh [PEAK_TF32 PEAK_BF16]    # dense TFLOP/s, default: H100/H200 SXM
#
# with the pipeline's environment active, or on an offline GPU machine with the wheels of gpu_wheels.sh carried
# (gpu_env.sh installs them). For the training and prediction issues' evidence within 8 minutes, run
# gpu_pipeline.sh instead: the limits of this script's steps add up to 16 minutes.
#
# Paper-preset training in float32 (TF32 convolutions) and bf16, NCHW and channels_last,
# bf16 with torch.compile; the laptop preset likewise; prediction of an ISBI-sized volume
# (30 x 512 x 512: time per section, TTA and compiled too), of a large one (throughput) and of a 0.5 GB one
# with TTA and without, each against MONAI and the bare network; the measured tile choice for the paper network in bf16 and float32;
# a profile of the stage's main thread.
# Each step has its own time limit, so that one failure does not hide the others' figures.
set -u
peak_tf32=${1:-494.7}
peak_bf16=${2:-989.4}
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh || exit 1
cd benchmarks
export PYTHONUNBUFFERED=1
step() {
    local limit=$1
    shift
    echo "\$ $*"
    timeout "$limit" "$@" || echo "(exit $?)"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
peaks=(--peak-tflops "none=$peak_tf32" "bf16=$peak_bf16")
training=(--steps 200 "${peaks[@]}")
step 100 python3 train_speed.py --presets paper laptop --amp none bf16 --variants plain channels_last "${training[@]}"
step 130 python3 train_speed.py --presets paper --amp bf16 --variants compile "${training[@]}"
# prediction (issue 25): the same tile, batch and precision for every side; TTA and compile beside plain
step 100 python3 predict_speed.py --preset paper --shape 30 512 512 --batch-size 8 --tta --compile
step 120 python3 predict_speed.py --preset paper --shape 4 8192 8192 --batch-size 8
step 150 python3 predict_speed.py --preset paper --shape 2 16384 16384 --batch-size 8 --tta
step 100 python3 tile_choice.py --preset paper --shape 4 4096 4096
step 100 python3 tile_choice.py --preset paper --shape 4 4096 4096 --amp none
step 60 python3 profile_stage.py --preset paper --shape 2 8192 8192
