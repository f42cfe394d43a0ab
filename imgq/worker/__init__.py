"""The Celery worker: batched, GPU-ready inference with idempotent writes."""
