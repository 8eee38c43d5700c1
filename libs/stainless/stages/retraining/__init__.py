"""Retraining: training jobs, their HTTP routes, the model registry's promotion."""
