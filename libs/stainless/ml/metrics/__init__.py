"""Evaluation metrics: image quality, perceptual distance, classification, segmentation."""
