"""Command-line entry points: ``python -m experiments.run {ex09} ...``."""
