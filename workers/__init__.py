"""The farm: Celery app, tasks and worker entry points. Thin: each task calls tuner/ code."""
