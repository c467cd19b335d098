"""The course's submission: the zip of exactly the files it expects, and the check run on it (its limits:
common.limits)."""
