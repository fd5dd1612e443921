"""Inference: the overlap-tile predictor, the choice of its tile size, and the restartable work store that
a prediction is written into."""
