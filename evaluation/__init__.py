"""Measuring the bundled model against data training never saw: an independent generator and the matcher."""
