"""Registration and cropping service (event consumer)."""
