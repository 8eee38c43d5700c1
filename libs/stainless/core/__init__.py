"""Ports and their adapters: settings, database, object store, event bus and outbox, task
queue, inference, model registry, logs and health. Each port has one interface and two
adapters (embedded and real), chosen by settings."""
