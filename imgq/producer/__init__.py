"""Submitting images: paths in, jobs recorded, chunks of image ids queued."""
