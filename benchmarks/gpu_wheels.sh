#!/usr/bin/env bash
# Here, before a GPU run: the wheels that the offline GPU machine lacks, into .whl (about 31 MB), to carry there:
# snakemake, zarr, dask and their dependencies (../shared/tools/offline_wheels.sh, or the script $OFFLINE_WHEELS
# names) and benchmarks/requirements.txt (MONAI, for predict_speed.py's comparison). gpu_env.sh installs them there.
#
#     bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${OFFLINE_WHEELS:-../shared/tools/offline_wheels.sh}
if [[ ! -f $tool ]]; then
    echo "gpu_wheels.sh: $tool not found (set OFFLINE_WHEELS to the offline wheels script)" >&2
    exit 1
fi
bash "$tool" .whl > /dev/null
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl -r benchmarks/requirements.txt
du -sh .whl
