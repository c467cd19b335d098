"""Does VAT's power iteration find its direction in float32? ``teacher.vat_xi`` is a finite difference: the
gradient of the KL divergence at a random step of that L2 norm. If the step changes the prediction by less than
float32 rounds, the gradient points at the rounding instead. For each xi this prints the mean cosine between the
float32 direction and the float64 one from the same random step (1 = exact), and between float64 at xi and at
1e-6 (1 = still the infinitesimal direction), over unlabeled digits the model does not yet predict at >= 0.99
(the others have no gradient to find, in either precision).

    python benchmarks/vat_xi.py [--data-dir D] [--split-seed 0]

The model: the preset's classifier trained for 300 full-batch AdamW steps on the split's 100 labels (a quick
stand-in for the transfer step's model). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn.functional as F

from ex08_autoencoder.config import ModelConfig
from ex08_autoencoder.data import few_label_data, load_mnist, to_float
from ex08_autoencoder.mean_teacher import vat_direction
from ex08_autoencoder.models import Classifier

XIS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def directions(model, x, target, xi: float, seed: int = 1):
    return vat_direction(model, x, target, xi, torch.Generator().manual_seed(seed)).flatten(1).double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=288, help="unlabeled digits (a teacher step's batch: 288)")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = few_label_data(load_mnist(args.data_dir), args.split_seed)
    model = Classifier(ModelConfig())
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = to_float(data.train_x), data.train_y
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    exact = copy.deepcopy(model).double()
    pool = to_float(data.unlabeled_x[:args.images])
    pool64 = pool.double()
    with torch.no_grad():  # each model's prediction, once: every xi perturbs around it
        target, target64 = model(pool).softmax(1), exact(pool64).softmax(1)
    unsure = target64.max(1).values < 0.99
    infinitesimal = directions(exact, pool64, target64, 1e-6)
    rows = {}
    print(f"{int(unsure.sum())} of {len(pool)} digits predicted below 0.99")
    print("xi       float32 vs float64   float64 vs float64 at 1e-6")
    for xi in XIS:
        ours, ref = directions(model, pool, target, xi), directions(exact, pool64, target64, xi)
        exactness = float((ours * ref).sum(1)[unsure].mean())
        smallness = float((ref * infinitesimal).sum(1)[unsure].mean())
        rows[f"{xi:g}"] = {"float32_vs_float64": round(exactness, 4), "vs_infinitesimal": round(smallness, 4)}
        print(f"{xi:<8g} {exactness:>18.3f}   {smallness:>26.3f}")
    print(json.dumps({"unsure_digits": int(unsure.sum()), "cosines": rows}))


if __name__ == "__main__":
    main()
