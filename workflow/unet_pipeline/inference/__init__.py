"""Inference: the overlap-tile predictor and the choice of its tile size."""
