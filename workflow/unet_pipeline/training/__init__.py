"""Training, in pieces that ``stages.train.build_trainer`` assembles.

``options`` (the settings), ``loss`` (the paper's weighted cross-entropy), ``optimisation`` (optimiser and
learning-rate schedule), ``batches`` (the batch of each step, on the device or read ahead), ``trainer`` (the
loop: train and validation steps), ``validation``, ``checkpoints`` (save, load, signature, fine-tuning start),
``curve`` (the training curve), ``distributed`` (data-parallel ranks) and ``optimiser_check`` (every shipped
preset's optimiser on real tiles).
"""
