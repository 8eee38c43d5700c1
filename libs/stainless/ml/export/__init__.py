"""Export of trained models for serving (Triton model repository)."""
