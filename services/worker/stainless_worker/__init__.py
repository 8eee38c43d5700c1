"""Celery worker service."""
