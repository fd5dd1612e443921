"""Library code of the U-Net Snakemake pipeline.

Each pipeline stage has one module here (``download``, ``ingest``, ...); the rule
scripts in ``scripts/`` only unpack the ``snakemake`` object and call into them, so
that tests and notebooks use exactly the code the workflow runs. This package
must stay importable with the standard library alone: heavy imports live in the
stage modules that need them, so that each rule's conda env only carries what
its own stage uses.
"""
