"""Relational database: tables, engine, sessions and migrations."""
