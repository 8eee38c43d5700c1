"""Inference: stain, classify and score the cropped cells of a field."""
