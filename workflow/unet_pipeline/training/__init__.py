"""Training: batches, data-parallel ranks, and the optimiser check of every shipped preset."""
