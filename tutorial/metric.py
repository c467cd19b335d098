"""Slide "the ex09 metric": the course's ``evaluate_model`` (batch size 1, ``MSELoss``, 1 / (2 * mean)) and this
repo's batched scorer agree on one trained model; a score of 100 is a mean loss of 0.005."""
from __future__ import annotations

PASS_LOSS = 1 / (2 * 100)
"""The mean per-image MSE at the course's pass mark of 100 (0.005: an RMS error of 48 * sqrt(0.005) = 3.4 px)."""


def agreement(model, split) -> dict[str, float]:
    """Both scorers on ``split`` with ``model``: the slide's loop and the batched one, and their difference."""
    from ex09_keypoints.evaluate import evaluate_course_exact, evaluate_split

    course = evaluate_course_exact(model, split)
    batched = evaluate_split(model, split)["score"]
    return {"course_loop": course, "batched": batched, "abs_diff": abs(course - batched),
            "rel_diff": abs(course - batched) / course, "n_images": len(split)}
