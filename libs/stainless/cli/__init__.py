"""The ``stainless`` command line."""
