"""Training math both exercises share: augmentation, EMA, mixup, optimizer steps, schedules, the epoch loop."""
