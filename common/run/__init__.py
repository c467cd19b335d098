"""Run infrastructure: the run dir and its files, the run record, W&B tracking, seeding, devices, signals."""
