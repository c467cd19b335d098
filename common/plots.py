"""Figure helpers both exercises use: matplotlib without a display, ``metrics.jsonl`` read back, and learning
curves drawn from it (one panel per quantity or per step)."""
from __future__ import annotations

import json
from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed), imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 100) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def read_metrics(path: Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def learning_curves(panels: list[dict], path: Path) -> Path:
    """One panel per dict: ``title``; ``x`` (epochs); ``left`` and optional ``right`` (a twin y axis), each
    ``{label: values}``; optional ``log`` (log-scale left axis) and ``hline`` (a reference line, e.g. the pass
    mark)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, ys in panel["left"].items():
            ax.plot(panel["x"], ys, label=label)
        if panel.get("log"):
            ax.set_yscale("log")
        if panel.get("hline") is not None:
            ax.axhline(panel["hline"], color="gray", ls="--", lw=1)
        handles = ax.get_legend_handles_labels()
        if panel.get("right"):
            twin = ax.twinx()
            for i, (label, ys) in enumerate(panel["right"].items()):
                twin.plot(panel["x"], ys, color=f"C{len(panel['left']) + i}", label=label)
            more = twin.get_legend_handles_labels()
            handles = (handles[0] + more[0], handles[1] + more[1])
        ax.legend(*handles, loc="upper center", fontsize=8)
        ax.set_title(panel["title"])
        ax.set_xlabel("epoch")
    return save(fig, path)
