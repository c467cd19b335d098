"""``python -m experiments.run ex09 --evaluate best.pt --csv faces.csv``: score a saved model on any CSV in the
course's format, with the course's batch-size-1 function, and the error per keypoint."""
from __future__ import annotations

import json

from common.errors import ConfigError


def evaluate_csv(args, cfg) -> int:
    if args.csv is None:
        raise ConfigError("--evaluate needs --csv FILE (a CSV in the course's format)")
    from ex09_keypoints.data import CourseDataset, load_split, report_dropped
    from ex09_keypoints.evaluate import course_score, evaluate_split
    from ex09_keypoints.saved import TEST_TIME_KEYS, load_model

    keys = [o.split("=", 1)[0] for o in args.overrides if o.startswith("model.")]
    test_time = {k.split(".", 1)[1]: getattr(cfg.model, k.split(".", 1)[1]) for k in keys if k in TEST_TIME_KEYS}
    model = load_model(args.evaluate, test_time=test_time)  # loaded once; a wrong file is the first thing to say
    weights = [k for k in keys if k not in TEST_TIME_KEYS]
    if weights:
        raise ConfigError(f"--evaluate scores the saved model as it is: --set {weights[0]} does not apply (only the "
                          f"test-time settings {', '.join(TEST_TIME_KEYS)} do)")
    split = load_split(args.csv, cfg.data.drop_bad_rows)
    report_dropped({"csv": split})
    score = course_score(model, CourseDataset(split))
    detail = evaluate_split(model, split)
    print(f"{args.csv}: {len(split)} images" + (f" ({split.dropped} bad rows dropped)" if split.dropped else ""))
    print(f"score (course, batch size 1): {score:.2f}   RMSE {detail['rmse_px']:.3f} px")
    for name, err in detail["rmse_px_per_keypoint"].items():
        print(f"  {name:26s} {err:6.2f} px")
    print(json.dumps({"score": score, "rmse_px": detail["rmse_px"], "n_images": len(split),
                      "dropped_rows": split.dropped, "rmse_px_per_keypoint": detail["rmse_px_per_keypoint"]}))
    return 0
