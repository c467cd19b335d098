"""Pieces both exercises share: one implementation each (seeding, devices, configs, schedules, EMA,
checkpoints, augmentation, downloads, run directories, W&B tracking)."""
