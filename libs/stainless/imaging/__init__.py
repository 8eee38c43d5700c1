"""Image generation and handling for Stainless (synthetic phantoms, figures)."""
