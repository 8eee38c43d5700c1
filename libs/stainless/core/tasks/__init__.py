"""Task queue port: a Celery app on Redis, eager (in process) as the embedded default."""

from __future__ import annotations

from stainless.core.tasks.app import create_celery

__all__ = ["create_celery"]
