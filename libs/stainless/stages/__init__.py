"""One package per pipeline stage: its use case, its adapters (HTTP routes, consumer,
Celery task) and its composition. Stages meet only through event contracts."""
