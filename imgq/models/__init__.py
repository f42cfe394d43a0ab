"""Architectures, datasets, training, evaluation and the model registry."""
