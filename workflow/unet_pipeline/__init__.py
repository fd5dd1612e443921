"""Library code of the U-Net Snakemake pipeline, grouped by concern.

Layers, each importing only those above it:

- ``core``: errors, atomic writes, checksums, progress, rule logging, figures;
- ``data``: sources and their transfer, image readers, the OME-Zarr volume store;
- ``models``: the networks, their tile geometry, device and precision;
- ``transforms``: augmentation, loss weight maps, cells of label images, gray-value normalisation;
- ``inference``, ``metrics``: the overlap-tile predictor, the ISBI 2012 scores;
- ``training``, ``segmentation``: the trainer's parts (its validation scores by the
  metrics); cells from probabilities (fragments, region graph, partition), made so
  that the metrics score them as written;
- ``stages``: one module per pipeline stage (``stages.download``, ``stages.ingest``,
  ...), named as its rule file, script and env.

The rule scripts in ``scripts/`` only unpack the ``snakemake`` object and call into
``stages``, so that tests and notebooks use exactly the code the workflow runs.
Every package ``__init__`` is importable with the standard library alone: heavy
imports live in the modules that need them, so that each rule's conda env only
carries what its own stage uses.
"""
