"""ex09: facial keypoint regression on 96x96 grayscale faces."""
