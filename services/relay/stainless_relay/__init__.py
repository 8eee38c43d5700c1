"""Outbox relay service."""
