#!/usr/bin/env bash
# Here, before a GPU run: the wheels that the offline GPU machine lacks, into .whl (about 31 MB), to carry there:
# snakemake, zarr, dask and their dependencies (../shared/tools/offline_wheels.sh, or the script $OFFLINE_WHEELS
# names) and MONAI of benchmarks/requirements.txt (predict_speed.py's comparison; not OpenVINO, a CPU runtime whose
# wheel is 59 MB and built for this machine's Python, not the GPU machine's). gpu_env.sh installs them there.
# The ISBI stacks (ISBI, default ../shared/data/isbi2012) are packed into .isbi/isbi2012.tar.gz (15 MB), since a
# folder beside the checkout does not travel; gpu_pipeline.sh unpacks them there. Both folders are git-ignored.
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
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "$(grep -i '^monai==' benchmarks/requirements.txt)"
isbi=${ISBI:-${UNET_SHARED_DATA:-../shared/data/isbi2012}}
mkdir -p .isbi
grep -qx "/.isbi/" .git/info/exclude || echo "/.isbi/" >> .git/info/exclude
tar czf .isbi/isbi2012.tar.gz -C "$isbi" .
du -sh .whl .isbi
