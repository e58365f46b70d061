"""Reproducible training of the bundled shapes model (dataset generator and trainer)."""
