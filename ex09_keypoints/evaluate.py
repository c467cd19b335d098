"""The course's score, exactly, plus a fast batched equivalent and per-keypoint pixel errors.

Course (exercise_09 ``evaluate_model``): batch size 1, ``MSELoss`` between ``keypoints`` and
``model(image).view(-1,15,2)`` (both squeezed), averaged over the data set; score = 1 / (2 * mean).
Because every image has the same 30 numbers, the batched mean of per-image MSEs is the same quantity.
"""
from __future__ import annotations

import torch

from ex09_keypoints.data import IMAGE_SIZE, KEYPOINT_NAMES, CourseDataset, KeypointsSplit


@torch.no_grad()
def course_score(model, dataset) -> float:
    """The course's ``evaluate_model``, line for line (DataLoader with batch_size=1, summed ``.item()``s)."""
    from torch.utils.data import DataLoader

    model.eval()
    criterion = torch.nn.MSELoss()
    dataloader = DataLoader(dataset, batch_size=1, shuffle=False)
    loss = 0
    for batch in dataloader:
        image, keypoints = batch["image"], batch["keypoints"]
        predicted_keypoints = model(image).view(-1, 15, 2)
        loss += criterion(torch.squeeze(keypoints), torch.squeeze(predicted_keypoints)).item()
    return 1.0 / (2 * (loss / len(dataloader)))


@torch.no_grad()
def predict(model, images_uint8, batch_size: int = 256, device="cpu", channels_last: bool = False):
    """(N,15,2) predictions for uint8 images (N,1,96,96), in eval mode, batched."""
    model.eval()
    out = []
    for i in range(0, images_uint8.shape[0], batch_size):
        x = images_uint8[i:i + batch_size].to(device).float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).view(-1, 15, 2).float().cpu())
    return torch.cat(out)


def score_from_predictions(pred, target) -> dict:
    """Course score from (N,15,2) predictions, plus RMSE in pixels overall and per keypoint.

    RMSE is per coordinate (x and y errors pooled), in 96-pixel image units: ``48 * sqrt(mse)``.
    """
    sq = (pred.double() - target.double()) ** 2  # (N,15,2)
    per_image = sq.mean(dim=(1, 2))
    mse = per_image.mean().item()
    per_kp = (sq.mean(dim=(0, 2)).sqrt() * IMAGE_SIZE / 2).tolist()
    return {"score": 1.0 / (2.0 * mse), "mse": mse, "rmse_px": (mse ** 0.5) * IMAGE_SIZE / 2,
            "rmse_px_per_keypoint": dict(zip(KEYPOINT_NAMES, per_kp)), "n_images": int(pred.shape[0])}


def evaluate_split(model, split: KeypointsSplit, device="cpu", channels_last: bool = False) -> dict:
    """Batched evaluation (equal to :func:`course_score` up to float rounding)."""
    return score_from_predictions(predict(model, split.images, device=device, channels_last=channels_last),
                                  split.keypoints)


def evaluate_course_exact(model, split: KeypointsSplit) -> float:
    return course_score(model.cpu(), CourseDataset(split))
