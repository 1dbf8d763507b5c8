"""The training step and what it calls each iteration: the loop (build, resume, step, checkpoint,
evaluate), the solver, checkpoint files, events (metrics.json, TensorBoard), RoI/prediction
images, stop requests at a step boundary and the backend switches."""
