"""One module per dvc.yaml stage (its name): ``run(params, ctx)`` reads the
stage's inputs, calls nas_core, writes its outputs and returns its metrics.
What they share (the context, MLflow, fan-out, the search's strategy and
space) lives one level up, in tasks/."""
