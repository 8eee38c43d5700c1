"""Scanner ingestion: API keys, upload checks, and the Ingestor the HTTP API calls."""
