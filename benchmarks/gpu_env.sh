# Sourced by the GPU scripts, from the project root: where this machine's Python lacks snakemake, zarr, dask or
# MONAI (an offline GPU machine), installs the carried wheels of .whl (gpu_wheels.sh) into .site; where it lacks
# the library, puts workflow/ on the path. Returns 1 when the workflow's packages are missing and no wheels are here.
if ! python3 -c "import snakemake, zarr, dask, monai" 2> /dev/null; then
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
        export PYTHONPATH=$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
    elif ! python3 -c "import snakemake, zarr, dask" 2> /dev/null; then
        echo "gpu_env.sh: snakemake, zarr or dask missing and no wheels in $PWD/.whl (benchmarks/gpu_wheels.sh)" >&2
        return 1
    else
        echo "gpu_env.sh: MONAI missing (benchmarks/requirements.txt): predict_speed.py runs without its side" >&2
    fi
fi
if ! python3 -c "import unet_pipeline" 2> /dev/null; then
    export PYTHONPATH=$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}
fi
