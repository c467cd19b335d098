"""Check an exported course submission the way the course loads it. Run as a script in a fresh interpreter:

    python -I common/course/submission_check.py EXPORT_DIR INPUTS.pt

It may import only the standard library, torch and the export folder (this repo's own packages are blocked, so
a submission that still needs them fails here as it would on the course's server). ``INPUTS.pt`` holds the
exercise name, the images and targets to score, and this repo's predictions for them. Prints one JSON object
(the figures and each check) and exits 1 when a check fails.
"""
import importlib.abc
import json
import os
import pickle
import sys

REPO_PACKAGES = {"common", "ex08_autoencoder", "ex09_keypoints", "experiments", "studies"}
MAX_DIFF = 1e-5  # the course's limits and pass marks come in INPUTS.pt (common/limits.py is their one home)


class BlockRepo(importlib.abc.MetaPathFinder):
    """The course's server has none of this repo: importing it must fail here too."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REPO_PACKAGES:
            raise ImportError(f"the submission imports {name!r}, which the course's server does not have")
        return None


def load_ex09(export_dir):
    from exercise_code.networks.keypoint_nn import KeypointModel

    with open(os.path.join(export_dir, "models", "facial_keypoints.p"), "rb") as f:
        blob = pickle.load(f)
    model = KeypointModel(blob["hparams"])
    model.load_state_dict(blob["state_dict"])
    return model, os.path.join(export_dir, "models", "facial_keypoints.p")


def load_ex08(export_dir):
    from exercise_code.models import Classifier, Encoder

    path = os.path.join(export_dir, "models", "classifier_pytorch.p")
    with open(path, "rb") as f:
        blob = pickle.load(f)["classifier_pt1"]
    encoder = Encoder(blob["encoder_hparam"], blob["encoder_inputsize"], blob["encoder_latent_dim"])
    model = Classifier(blob["hparams"], encoder)
    model.load_state_dict(blob["state_dict"])
    return model, path


def course_score(model, images, keypoints):
    """The course's ``evaluate_model``: batch size 1, MSE of ``model(image).view(-1, 15, 2)``, 1 / (2 * mean)."""
    import torch

    losses = []
    with torch.no_grad():
        for image, target in zip(images, keypoints):
            pred = model(image.unsqueeze(0)).view(-1, 15, 2)
            losses.append(torch.nn.functional.mse_loss(pred, target.unsqueeze(0)).item())
    return 1.0 / (2 * (sum(losses) / len(losses)))


def main(export_dir, inputs_path):
    sys.meta_path.insert(0, BlockRepo())
    import torch  # from the environment, before the submission's folder is on the path (it goes last, too)

    sys.path.append(export_dir)

    torch.set_num_threads(1)
    inputs = torch.load(inputs_path, weights_only=True)
    exercise = inputs["exercise"]
    try:
        model, path = (load_ex09 if exercise == "ex09" else load_ex08)(export_dir)
    except Exception as e:  # what the course's server would die of: say it, as a failed check
        print(json.dumps({"exercise": exercise, "error": f"{type(e).__name__}: {e}", "checks": {"loads": False}}))
        return 1
    model.eval()
    x = inputs["val_images"].float() / 255.0
    if exercise == "ex08":
        x = x.view(len(x), -1)  # the course feeds flattened (N, 784) digits
    with torch.no_grad():
        diff = (model(x) - inputs["expected"]).abs().max().item()
    out = {"exercise": exercise, "max_abs_diff": diff, "params": sum(p.numel() for p in model.parameters()),
           "size_mb": os.path.getsize(path) / 1e6}
    if exercise == "ex09":
        out["score"] = course_score(model, inputs["val_images"].float() / 255.0, inputs["val_targets"])
    else:
        for name in ("test100", "test10k"):
            images, labels = inputs[f"{name}_images"], inputs[f"{name}_labels"]
            with torch.no_grad():
                pred = model(images.float().view(len(images), -1) / 255.0).argmax(1)
            out[f"{name}_acc"] = (pred == labels).float().mean().item()
        out["convolutions"] = sum(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))
                                  for m in model.modules())
    limits = inputs["limits"]
    metric, bar = limits["pass_mark"]
    out["passes"] = out[metric] >= bar
    out["pass_mark"] = {"metric": metric, "bar": bar, "value": out[metric]}
    checks = {"same_predictions": diff <= MAX_DIFF, "params_below_5M": out["params"] < limits["max_params"],
              "file_below_20MB": os.path.getsize(path) < limits["max_bytes"], "passes_the_course_mark": out["passes"]}
    if exercise == "ex08":
        checks["no_convolutions"] = out["convolutions"] == 0
    out["checks"] = checks
    print(json.dumps(out))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
