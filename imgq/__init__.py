"""imgq: batch image classification with a queue, GPU workers and results in SQL."""

__version__ = "0.1.0"
