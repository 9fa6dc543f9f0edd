"""Retrain, export and predict: the retrain stage (stage), loading a
retrained workdir and its `jax.export` artifact (export), and classifying
image files with it (predict)."""
