"""Command-line entry points: ``python -m experiments.run <exercise> ...`` (the exercises: :mod:`exercises`)."""
