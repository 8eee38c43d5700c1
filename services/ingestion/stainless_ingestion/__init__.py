"""Scanner ingestion service (HTTP)."""
