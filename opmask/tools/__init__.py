"""Post-run tools: what a person runs on a finished (or running) run's checkpoints to look at the
model, outside training and evaluation. ``predict``: the predictor (a run folder or config +
weights -> detections on an image, exactly as the run's evaluation computes them) and the overlay
drawing; ``predict_files``: the body of ``opmask-predict`` (inputs, outputs, progress)."""
