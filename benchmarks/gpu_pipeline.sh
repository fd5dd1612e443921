#!/usr/bin/env bash
# The shipped paper preset end to end through snakemake on one GPU machine: ISBI 2012 from a loopback
# server (the real download rule), ingest, weight maps, augment, train, predict with TTA as shipped,
# evaluation of the held-out sections, prediction of the challenge's test volume.
#
#     bash ../shared/tools/offline_wheels.sh            # here, once: .whl (snakemake, zarr, dask), about 29 MB
#     bash benchmarks/gpu_pipeline.sh [CORES]           # there, with .whl carried; CORES default: all
#
# Environment: ISBI (folder of the three ISBI TIFF stacks, default ../shared/data/isbi2012 or
# $UNET_SHARED_DATA), PRESET (default paper), OVERLAY (a further config file, e.g. fewer iterations for a
# CPU smoke test of this script). Prints each rule's time (from its benchmark file), the training loop's
# tiles/s beside the bare step's (train_speed.py), and the held-out scores (summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
cores=${1:-$(nproc)}
preset=${PRESET:-paper}
isbi=${ISBI:-${UNET_SHARED_DATA:-../shared/data/isbi2012}}
results=results-gpu-pipeline
export PYTHONUNBUFFERED=1
start=$(date +%s)

if ! python3 -c "import snakemake, zarr, dask" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
    export PYTHONPATH=$PWD/.site:$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}
fi
echo "install: $(( $(date +%s) - start )) s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"

port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$isbi" > /dev/null 2>&1 &
server=$!
trap 'kill $server 2> /dev/null' EXIT
mkdir -p "$results"
cat > "$results/overlay.yaml" <<EOT
results: $results
preset: $preset
datasets:
  isbi2012: {base: "http://127.0.0.1:$port"}
  isbi2012_test: {base: "http://127.0.0.1:$port"}
EOT
targets=("$results/isbi2012/evaluation/$preset/summary.json" "$results/isbi2012_test/predictions/$preset.zarr")
python3 -m snakemake --cores "$cores" --configfile config/config.yaml "$results/overlay.yaml" ${OVERLAY:+"$OVERLAY"} \
    -- "${targets[@]}"
echo "workflow: $(( $(date +%s) - start )) s in all, install included"

python3 - "$results" "$preset" <<'EOT'
import csv, json, sys
from pathlib import Path

results, preset = Path(sys.argv[1]), sys.argv[2]
for tsv in sorted((results / "benchmarks").glob("*/*.tsv")):
    row = next(csv.DictReader(tsv.open(), delimiter="\t"))
    print(f"rule {tsv.parent.name:16s} {tsv.stem:40s} {float(row['s']):8.1f} s, max RSS {row['max_rss']} MB")
curve = [row for row in csv.DictReader((results / "isbi2012/models" / preset / "training_curve.csv").open())]
rates = sorted(float(row["tiles_per_s"]) for row in curve if row["split"] == "train")
print(f"training loop: median {rates[len(rates) // 2]:.1f} tiles/s over the log windows (validation excluded)")
summary = json.loads((results / "isbi2012/evaluation" / preset / "summary.json").read_text())
print("held-out scores:", json.dumps({k: v["value"] for k, v in summary["metrics"].items()}))
EOT
python3 benchmarks/train_speed.py --presets "$preset" --amp bf16 --variants channels_last --steps 100
