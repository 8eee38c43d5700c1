"""Machine learning with torch: networks, losses, confidence, metrics, export."""
