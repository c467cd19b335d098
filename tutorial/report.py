"""``TUTORIAL.md``: one section per slide group, each with the claim, the experiment, its figure or table and what
the data says, every number from this run (the grids' cells from their studies, the rest recomputed)."""
from __future__ import annotations

from pathlib import Path

from common.files.atomic import atomic_write_text


def _pm(row: dict) -> str:
    return f"{row['mean']:.1f} +- {row['sd']:.1f}"


def _label(variant: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in variant.items())


def says(a: dict, b: dict, what_a: str, what_b: str) -> str:
    """Whether ``a`` beats ``b`` by more than the seeds' own spread (twice the larger sd), in one sentence."""
    d, noise = a["mean"] - b["mean"], max(a["sd"], b["sd"])
    if min(len(a["seeds"]), len(b["seeds"])) < 2:
        return f"{what_a} - {what_b} = {d:+.1f} on one seed (no spread to judge it by: give --seeds 0,1,2)"
    if abs(d) <= 2 * noise:
        return f"{what_a} and {what_b} are within the seeds' spread ({d:+.1f}, sd up to {noise:.1f})"
    return f"{what_a} {'beats' if d > 0 else 'trails'} {what_b} by {abs(d):.1f} (more than twice the sd {noise:.1f})"


def bars(rows: list[dict], path: Path, title: str, group: str | None = None) -> Path:
    """Val score mean +- sd per variant; with ``group`` (a parameter), one bar colour per value of it."""
    from common.plots import pyplot, save

    plt = pyplot()
    keys = list(dict.fromkeys(k for r in rows for k in r["variant"] if k != group))  # a 'when' may drop one

    def name(r: dict) -> tuple:
        return tuple(r["variant"].get(k, "-") for k in keys)
    names = sorted({name(r) for r in rows}, key=str)
    groups = sorted({r["variant"].get(group) for r in rows}, key=str) if group else [None]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 + 1.1 * len(names) * len(groups) ** 0.5), 3.6))  # title fits
    width = 0.8 / len(groups)
    for g_i, g in enumerate(groups):
        sel = {name(r): r for r in rows if not group or r["variant"].get(group) == g}
        xs = [i + (g_i - (len(groups) - 1) / 2) * width for i in range(len(names))]
        ys = [sel[n]["mean"] if n in sel else float("nan") for n in names]
        es = [sel[n]["sd"] if n in sel else 0 for n in names]
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"{group.split('.')[-1]}={g}" if group else None)
    ax.set_xticks(range(len(names)), ["\n".join(map(str, n)) for n in names], fontsize=8)
    ax.set_ylabel("val score (mean +- sd over seeds)")
    ax.set_title(title, fontsize=10)
    if group:
        ax.legend(fontsize=8)
    return save(fig, path)


def table(rows: list[dict]) -> list[str]:
    lines = ["| variant | val score | seeds | parameters | s / epoch |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["mean"]):
        seeds = ", ".join(f"{v:.1f}" for _, v in sorted(r["seeds"].items()))
        spe = f"{r['s_per_epoch']:.2f}" if r["s_per_epoch"] else "-"
        lines.append(f"| {_label(r['variant'])} | {_pm(r)} | {seeds} | {r['params']:,} | {spe} |")
    return lines


def _find(rows: list[dict], want: dict) -> dict:
    """The row whose variant has the values of ``want`` (``{"model.norm": "batch"}``)."""
    return next(r for r in rows if all(r["variant"].get(k) == v for k, v in want.items()))


NORMS = ("batch", "group", "layer", "instance", "none")


def _cell(norms: list[dict], kind: str, b: int) -> dict:
    return _find(norms, {"model.norm": kind, "train.batch_size": b})


def batch_size_gains(norms: list[dict], sizes: list[int]) -> dict[str, tuple[float, float]]:
    """Per norm: its score at the smallest batch size minus at the largest, and that difference's sd."""
    small, big = ({kind: _cell(norms, kind, b) for kind in NORMS} for b in (sizes[0], sizes[-1]))
    return {kind: (small[kind]["mean"] - big[kind]["mean"], (small[kind]["sd"] ** 2 + big[kind]["sd"] ** 2) ** 0.5)
            for kind in NORMS}


def batch_dependence(norms: list[dict], sizes: list[int]) -> str:
    """Section 4's verdict. The same epochs at a smaller batch are more optimizer steps: no norm at all measures
    what that alone does, so batch norm's dependence on the mini-batch is its gain beyond no-norm's."""
    gains = batch_size_gains(norms, sizes)
    (bn, bn_sd), (none, none_sd) = gains["batch"], gains["none"]
    extra, noise = bn - none, 2 * (bn_sd ** 2 + none_sd ** 2) ** 0.5
    if extra < -noise:
        verdict = "batch norm loses that much at the small batch beyond the steps: the dependence the slide warns of"
    elif extra > noise:
        verdict = "batch norm gains more than the steps explain at the small batch (noisier batch statistics help)"
    else:
        verdict = "its dependence on the batch size does not show at these sizes"

    free = ("group", "layer", "instance")
    lead = {b: min(_cell(norms, k, b)["mean"] for k in free) - _cell(norms, "batch", b)["mean"] for b in sizes}
    where = ", ".join(f"{lead[b]:+.1f} at batch {b}" for b in sizes)
    ahead = (f"every batch-free norm is ahead of batch norm at each size (the worst of them by {where})"
             if all(v > 0 for v in lead.values()) else f"the worst batch-free norm against batch norm: {where}")
    return (f"No norm at all gains {none:+.1f} at batch {sizes[0]} (the same epochs are {sizes[-1] // sizes[0]}x "
            f"the optimizer steps), so that much of every gain is the step count; batch norm's gain beyond it is "
            f"{extra:+.1f} (twice its sd: {noise:.1f}): {verdict}; {ahead}.")


def write_report(out: Path, *, seeds, budget, workers, demo, grids, case, agreement, wall_s) -> Path:
    from common.files.json_files import read_json
    from tutorial.metric import PASS_LOSS

    fig = out / "figures"
    seeds_text = ",".join(map(str, seeds))
    lines = [f"# Tutorial 9, measured ({budget} budget, seeds {seeds_text})", "",
             f"Made by `python -m experiments.run tutorial --seeds {seeds_text} --budget {budget} --workers "
             f"{workers}` in {wall_s:.0f} s (this invocation; cells finished earlier were kept). Val scores are "
             "the course score on the 298 val faces, mean +- sd over the seeds.", ""]

    mlp = grids["tutorial-mlp"]
    cnn, fc = _find(mlp, {"model.arch": "cnn"}), _find(mlp, {"model.arch": "mlp"})
    bars(mlp, fig / "mlp_vs_cnn.png", "MLP vs CNN at a matched parameter count")
    lines += ["## 1. Why not just an MLP", "", "*Claim: a fully connected layer's weights grow with the image; a "
              "convolution shares a small filter over it.*", "",
              "| image | one nn.Linear to 1000 units |", "|---|---|",
              *[f"| {k} | {v:,} parameters |" for k, v in demo["counts"].items()], "",
              f"The slide's 32x32x3 image to six 28x28 maps: a 5x5x3 `nn.Conv2d` bank has "
              f"{demo['conv_vs_dense']['conv_5x5x3']:,} parameters, an `nn.Linear` with the same outputs "
              f"{demo['conv_vs_dense']['dense_same_outputs']:,}.", "",
              "On ex09, same epochs, about the same parameters (`model.arch=mlp`, BatchNorm1d):", "",
              *table(mlp), "", "![MLP vs CNN](figures/mlp_vs_cnn.png)", "",
              f"**What the data says:** {says(cnn, fc, 'the CNN', 'the MLP')}.", ""]

    lines += ["## 2. Convolution by example", "", "*Claim: a 3x3 kernel `[[-1,-1,-1],[0,0,0],[1,1,1]]` finds "
              "horizontal edges, its transpose vertical ones.*", "",
              "`F.conv2d` with both kernels on three val faces (red: dark above bright / left of bright):", "",
              "![conv example](figures/conv_example.png)", "",
              "**What the data says:** eyebrows, eyes and the mouth light up the horizontal kernel, the face's "
              "outline and the nose the vertical one (a test checks a pixel against the hand computation).", ""]

    centred = max(v["max_abs_mean"] for k, v in demo["norm_stats"].items() if "per image" not in k)
    per_image = demo["norm_stats"]["BatchNorm2d, per image"]["max_abs_mean"]
    stat_rows = [f"| {k} | {v.get('axes', 'per image: H, W')} | {v['max_abs_mean']:.1e} | "
                 f"{v['max_abs_var_minus_1']:.1e} |" for k, v in demo["norm_stats"].items()]
    lines += ["## 3. Batch norm, fully connected vs spatial", "", "*Claim: BatchNorm1d normalises each feature "
              "over the batch; BatchNorm2d each channel over the batch and all positions.*", "",
              "32 val faces through a seeded 3x3 conv (8 channels); each layer in training mode, then the mean "
              "and variance measured along its own axes (worst over the other indices):", "",
              "| layer | axes | max abs mean | max abs (var - 1) |", "|---|---|---|---|", *stat_rows, "",
              "![normalisation axes](figures/norm_axes.png)", "",
              f"**What the data says:** each layer centres exactly its own axes (every mean within {centred:.0e} of 0; "
              "the variance is v / (v + eps), so a low-variance channel sits a little below 1); BatchNorm2d leaves "
              f"each image's own channel mean up to {per_image:.2g} from 0 (last row): it uses the batch.", ""]

    norms = grids["tutorial-norms"]
    bars(norms, fig / "norms.png", "Normalisation x batch size", group="train.batch_size")
    sizes = sorted({r["variant"]["train.batch_size"] for r in norms})
    drops = [f"{kind}: {gain:+.1f}" for kind, (gain, _) in batch_size_gains(norms, sizes).items()]
    lines += ["## 4. Other normalisations", "", "*Claim: layer, instance and group norm each reduce the network's "
              "dependence on the mini-batch.*", "", *table(norms), "", "![norms](figures/norms.png)", "",
              f"Score at batch {sizes[0]} minus batch {sizes[-1]}: " + "; ".join(drops) + ".", "",
              "**What the data says:** " + "; ".join(
                  says(_find(norms, {"model.norm": "batch", "train.batch_size": b}),
                       _find(norms, {"model.norm": "group", "train.batch_size": b}), "batch norm", "group norm")
                  + f" at batch {b}" for b in (sizes[-1], sizes[0])) + ". " + batch_dependence(norms, sizes), ""]

    drop = grids["tutorial-dropout"]
    bars(drop, fig / "dropout.png", "Dropout after each conv block")
    none = _find(drop, {"model.conv_dropout": "none"})
    best = {k: max((r for r in drop if r["variant"]["model.conv_dropout"] == k), key=lambda r: r["mean"])
            for k in ("dropout", "dropout2d")}
    lines += ["## 5. Dropout for convolutional layers", "", "*Claim: regular dropout barely helps in conv layers; "
              "spatial dropout (Dropout2d) makes more sense.*", "",
              f"p = 0.5 on ones: `nn.Dropout` zeroes {demo['dropout_regular']['zero_fraction']:.0%} of the "
              f"entries and leaves {demo['dropout_regular']['maps_mixed']:.0%} of the maps mixed; `nn.Dropout2d` "
              f"drops {demo['dropout_cnn']['maps_all_zero']:.0%} of the maps whole and mixes none.", "",
              "![dropout patterns](figures/dropout_patterns.png)", "", *table(drop), "",
              "![dropout](figures/dropout.png)", "",
              f"**What the data says:** {says(best['dropout'], none, 'the best nn.Dropout', 'no dropout')}; "
              f"{says(best['dropout2d'], none, 'the best nn.Dropout2d', 'no dropout')}; "
              f"{says(best['dropout2d'], best['dropout'], 'Dropout2d', 'Dropout')}.", ""]

    summary = read_json(Path(case) / "summary.json") or {}
    recon = Path(case) / "reconstructions.png"
    if recon.is_file():
        (fig / "ex08_reconstructions.png").write_bytes(recon.read_bytes())
    lines += ["## 6. Exercise 8 case study", "", "*The slide's autoencoder (784-392-196-98-49-32, BatchNorm, "
              "LeakyReLU) pretrained 5 epochs, then its classifier (32-400-400-10) 50 epochs on the 100 labels; "
              "Adam lr 5e-4, wd 1e-4.*", "",
              f"Parameters: autoencoder {summary.get('params_autoencoder', 0):,} (slide: 0.824M), classifier "
              f"{summary.get('params_classifier', 0):,} (slide: 0.591M). Test accuracy: "
              f"{summary.get('test10k/acc', float('nan')):.2%} on the 10k test set, "
              f"{summary.get('test100/acc', float('nan')):.0%} on the 100-image test split (run: `{case}`).", "",
              "![reconstructions](figures/ex08_reconstructions.png)", ""]

    a = agreement
    lines += ["## 7. The ex09 metric", "", "*The course's `evaluate_model`: batch size 1, `MSELoss`, "
              "score = 1 / (2 * mean loss); 100 passes.*", "",
              f"On a CNN trained above (`{a['run']}`), {a['n_images']} val faces: the slide's loop gives "
              f"{a['course_loop']:.4f}, the repo's batched scorer {a['batched']:.4f} (relative difference "
              f"{a['rel_diff']:.1e}). A score of 100 is a mean loss of {PASS_LOSS:.3f}.", ""]
    path = out / "TUTORIAL.md"
    atomic_write_text(path, "\n".join(lines))
    return path
