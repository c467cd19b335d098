"""Train an ex08 preset: its steps (pretrain -> transfer -> teacher [-> student]), all or one, into one run dir.

The run dir holds the resolved config, the few-label split (``split.json``), ``metrics.jsonl`` (a row per epoch,
tagged with its step), a checkpoint per step (``pretrain.pt``, ``transfer.pt``, ``teacher.pt``[, ``student.pt``]), the
exported final classifier ``model.pt`` (< 5M parameters, < 20 MB, checked), PNGs, and ``summary.json``. One W&B run per
step, grouped by the run dir's name. Each step is seeded on its own (seed * 1000 + step number), so running
one step alone (``only_step``, the CLI's ``--step``) from a saved ``pretrain.pt`` gives the same numbers as the
whole preset does. Metrics are named ``val/acc``, ``test10k/acc``, ...; in W&B prefixed by the step.
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

import common.training.loop
from common.config import check_resumable, to_dict
from common.errors import ConfigError
from common.files import checkpoint
from common.files.atomic import atomic_write_text
from common.files.json_files import read_json_dict
from common.run.paths import resolve_data_dir
from common.run.record import data_record, start_record
from common.run.run_config import start_run
from common.run.rundir import RunDir, check_not_complete
from common.run.seed import seed_everything
from common.run.timing import since_process_start
from common.run.tracking import Tracker, open_tracker
from common.training.training_state import TrainingState, read_state
from ex08_autoencoder import plots, step_cache
from ex08_autoencoder.config import STEPS, AutoencoderConfig
from ex08_autoencoder.data import FewLabelData, few_label_data, load_mnist, mnist_files
from ex08_autoencoder.evaluate import accuracy, predict_logits, scores
from ex08_autoencoder.mean_teacher import mean_teacher
from ex08_autoencoder.models import Autoencoder, Classifier, encode, millions
from ex08_autoencoder.presets import make_config
from ex08_autoencoder.pretrain import corrupt, pretrain
from ex08_autoencoder.probe import linear_probe
from ex08_autoencoder.saved import CHECKPOINT_OF, load_step, save_step
from ex08_autoencoder.self_training import self_training
from ex08_autoencoder.transfer import transfer

SAVE_EVERY_S = 5.0
"""A save of the leaderboard preset's teacher state (28.7 MB) takes ~0.07 s; the transfer step's epochs take
~0.3 s, so saving after every one would add ~25 % to that step. A kill loses at most these seconds of work."""


def _previous(run_dir: Path, step: str, cfg: AutoencoderConfig, device="cpu"):
    """The model ``step`` left in the run dir, built with the same model settings as ``cfg``."""
    path = Path(run_dir) / CHECKPOINT_OF[step]
    if not path.is_file():
        raise ConfigError(f"{path} is missing: run the '{step}' step first into the same --out dir "
                          f"(or the whole preset without --step)")
    return load_step(path, "autoencoder" if step == "pretrain" else "classifier", device, expect_model=cfg.model)


def _split_file(run: RunDir, data: FewLabelData) -> None:
    """Save the split with the run; a later ``--step`` into the same dir must use the same one."""
    path = run / "split.json"
    if path.is_file():
        saved = read_json_dict(path, "split")
        if any(saved.get(k) != data.split[k] for k in ("train", "val", "test")):
            raise ConfigError(f"{path} holds a different few-label split than data.split_seed gives now; "
                              f"use the split_seed of the earlier steps or a new --out dir")
        return
    atomic_write_text(path, json.dumps(data.split) + "\n")


def _report_classifier(model, data: FewLabelData, run: RunDir, step: str, figures: list, tracker: Tracker) -> dict:
    logits = predict_logits(model, data.test10k_x)  # once, for the accuracy, the confusion matrix and the table
    test100, test10k = accuracy(model, data.test100_x, data.test100_y), scores(logits, data.test10k_y)
    pred = logits.argmax(1)
    figures.append(plots.confusion(data.test10k_y, pred, run / f"confusion_{step}.png",
                                   f"{step}: MNIST 10k test, accuracy {test10k['acc']:.2%}"))
    if tracker.run is not None:  # W&B: the confusion matrix, and the first 100 digits it gets wrong
        labels, predicted = data.test10k_y.tolist(), pred.tolist()
        tracker.log_confusion(f"{step}/test10k/confusion", labels, predicted, [str(d) for d in range(10)])
        confidence = logits.softmax(1).max(1).values
        wrong = (pred != data.test10k_y).nonzero().flatten()[:100].tolist()
        tracker.log_table(f"{step}/test10k/misclassified", ["digit", "label", "prediction", "confidence"],
                          [[data.test10k_x[i, 0].cpu().numpy(), labels[i], predicted[i], float(confidence[i])]
                           for i in wrong])
    return {"test100/acc": test100["acc"], "test10k/acc": test10k["acc"], "params": checkpoint.count_params(model)}


def state_path(run_dir: Path, step: str) -> Path:
    """Where a running step keeps its training state (deleted once the step's checkpoint holds the result)."""
    return Path(run_dir) / f"{step}.state.pt"


def run_step(step: str, cfg: AutoencoderConfig, data: FewLabelData, run: RunDir, tracker: Tracker,
             progress: bool, on_epoch: Callable[[int, dict], None] | None = None,
             state: TrainingState | None = None) -> dict:
    """Train ``step`` (going on from ``state`` when it holds a saved epoch), save its checkpoint and figures."""
    device = data.train_x.device
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed * 1000 + STEPS.index(step))
    # The step's epoch loop: its rows tagged with the step, its state saved at most every SAVE_EVERY_S.
    fit = partial(common.training.loop.fit, f"ex08 {step}", state=state or TrainingState(None, step), run=run,
                  tracker=tracker, step=step, on_epoch=on_epoch, progress=progress)
    figures, result = [], {}
    if step == "pretrain":
        ae, result = pretrain(cfg.pretrain, Autoencoder(cfg.model).to(device), data, generator, cfg.run.amp, fit)
        result["params"] = checkpoint.count_params(ae)
        save_step(ae, "autoencoder", cfg, run / CHECKPOINT_OF[step], **result)
        result.update(linear_probe(ae.encoder, data))
        c = cfg.pretrain
        fixed = torch.Generator(device=device).manual_seed(0)
        figures.append(plots.reconstructions(ae, data.val_x, lambda x: corrupt(x, c.mask_ratio, c.noise_std, fixed),
                                             run / "reconstructions.png"))
        figures.append(plots.latent_pca(encode(ae.encoder, data.test10k_x[:3000]), data.test10k_y[:3000],
                                        run / "latent_pca.png"))
    elif step == "transfer":
        encoder = _previous(run.path, "pretrain", cfg, device).encoder
        model, result = transfer(cfg.transfer, Classifier(cfg.model, encoder).to(device), data, generator,
                                 cfg.run.amp, fit)
    elif step == "teacher":
        student = _previous(run.path, "transfer", cfg, device)
        model, result = mean_teacher(cfg.teacher, student, data, generator, cfg.run.amp, fit)
    else:
        teacher = _previous(run.path, "teacher", cfg, device)
        start = (Classifier(cfg.model, _previous(run.path, "pretrain", cfg, device).encoder).to(device)
                 if cfg.student.init == "pretrain" else copy.deepcopy(teacher))
        model, result = self_training(cfg.student, start, teacher, data, generator, cfg.run.amp, fit)
    if step != "pretrain":
        result.update(_report_classifier(model, data, run, step, figures, tracker))
        save_step(model, "classifier", cfg, run / CHECKPOINT_OF[step], **result)
        tracker.log_model(run / CHECKPOINT_OF[step], f"ex08-{cfg.track.name or run.path.name}-{step}",
                          {k: v for k, v in result.items() if isinstance(v, (int, float))})
    for fig in figures:
        tracker.log_image(fig.stem, fig)
    result["figures"] = [str(f) for f in figures]
    return result


def train(cfg: AutoencoderConfig, out_dir: str | Path, *, resume: str | Path | None = None,
          overwrite: bool = False, on_epoch: Callable[[int, dict], None] | None = None,
          tracker: Tracker | None = None, progress: bool = True) -> dict:
    """Run all of ``cfg.steps`` (or just ``cfg.only_step``) into ``out_dir``; returns the (merged) summary.

    ``on_epoch(epoch, row)`` sees every epoch's row (tagged with its ``step``; a study's pruner watches
    ``val/acc``) and may raise to stop. ``tracker``: log every step into this one W&B run and leave finishing
    it to the caller (a study trial); by default each step opens and closes its own. ``resume``: this run dir
    again, to finish an interrupted run: finished steps are kept, the interrupted one goes on after its last
    saved epoch (``<step>.state.pt``) and continues its W&B run, so the result is exactly the uninterrupted one.
    ``overwrite``: replace the run in ``out_dir``, once the config, the checkpoints and the data have been checked.
    """
    cfg.validate()
    if resume is not None:
        if Path(resume).resolve() != Path(out_dir).resolve():
            raise ConfigError(f"--resume {resume}: an ex08 run goes on in its own dir; drop --out")
        saved = Path(resume) / "config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume {resume} is not a run dir (no config.json)")
        saved_config = read_json_dict(saved, "config")
        saved_config.pop("experiment", None)  # which exercise: a record, not a setting
        check_resumable(saved_config, cfg, resume)
        check_not_complete(resume, lambda summary: set(cfg.steps) <= set(summary.get("steps", {})))
    t0 = time.perf_counter()
    if cfg.only_step not in (None, "pretrain"):  # a missing or mismatched checkpoint stops us before the data loads
        _previous(out_dir, STEPS[STEPS.index(cfg.only_step) - 1], cfg)
    for build in (lambda: Autoencoder(cfg.model), lambda: Classifier(cfg.model)):
        checkpoint.check_model_size(build)  # before a huge config allocates anything
    device, threads = start_run(cfg.run)
    # The data is read and checked before the run dir is touched (--overwrite replaces it only after this).
    data = few_label_data(load_mnist(cfg.data.data_dir), cfg.data.split_seed, cfg.data.per_class, device,
                          cfg.data.max_unlabeled)
    with RunDir(out_dir, cfg, reuse=cfg.only_step is not None or resume is not None, replace=overwrite) as run:
        print(f"[ex08] preset {cfg.preset}: {param_report(cfg)}", file=sys.stderr, flush=True)
        run.record(**start_record(cfg, make_config, threads, device, run / "code.patch"))
        split_sha256 = hashlib.sha256(json.dumps(data.split, sort_keys=True).encode()).hexdigest()
        run.record(data=data_record(resolve_data_dir(cfg.data.data_dir), mnist_files(cfg.data.data_dir),
                                    split_sha256=split_sha256))
        _split_file(run, data)
        summary_path = run / "summary.json"
        keep = cfg.only_step or resume is not None
        summary = read_json_dict(summary_path, "summary") if summary_path.is_file() and keep else {}
        summary.setdefault("steps", {})
        steps = [cfg.only_step] if cfg.only_step else list(cfg.steps)
        wandb_runs = dict(run.previous.get("wandb", {})) if resume is not None else {}  # step -> its W&B run
        if resume is not None:
            done = [s for s in steps if s in summary["steps"] and (run / CHECKPOINT_OF[s]).is_file()]
            steps = [s for s in steps if s not in done]
        states = {s: step_state(run.path, s, cfg, resume is not None) for s in steps}
        if resume is not None:  # each step's loop drops its rows after its saved state (common.training.loop)
            going_on = [f"{s} from epoch {states[s].epoch + 1}" for s in steps]
            print(f"[ex08] resuming {run.path}: {', '.join(done) or 'no step'} done, running "
                  f"{', '.join(going_on) or 'nothing'}", file=sys.stderr)
        # A step from the cache only where its earlier steps are this run's own (not --step's checkpoints).
        digests = (step_cache.step_digests(cfg, split_sha256, threads, device, step_cache.code_digest())
                   if cfg.cache_steps and cfg.only_step in (None, "pretrain") and step_cache.available() else {})
        cached = dict(run.previous.get("cached_steps", {})) if resume is not None else {}
        for step in steps:
            # Held while the step is restored or trained: a second run wanting it at once waits for its entry.
            with step_cache.computing(digests.get(step), step):
                t_step = time.perf_counter()
                hit = step_cache.restore(digests[step], step, run.path) if step in digests else None
                if hit is not None:
                    result = replay_cached(step, hit, run, on_epoch, t_step)
                    cached[step] = digests[step]
                    run.record(cached_steps=cached)
                    summary["steps"][step] = result
                    run.write_summary(summary)
                    states[step].finish()
                    continue
                seed_everything(cfg.run.seed * 1000 + STEPS.index(step), cfg.run.deterministic)
                with open_tracker(cfg.track, to_dict(cfg), run.path, tracker, group=cfg.track.group or run.path.name,
                                  name=f"{cfg.track.name or run.path.name}-{step}", job_type=f"ex08-{step}",
                                  run_id=wandb_runs.get(step, {}).get("id")) as step_tracker:
                    wandb_runs[step] = step_tracker.info()
                    run.record(wandb=wandb_runs)
                    step_tracker.define_metric(f"{step}/*", step_metric=f"{step}/epoch")
                    for key, how in (("val/acc", "max"), ("val/loss", "min")):
                        step_tracker.define_metric(f"{step}/{key}", summary=how, step_metric=f"{step}/epoch")
                    result = run_step(step, cfg, data, run, step_tracker, progress, on_epoch, states[step])
                    result["wall_s"] = time.perf_counter() - t_step
                    step_tracker.summary({f"{step}/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
                summary["steps"][step] = result
                run.write_summary(summary)  # after every step: what a resumed run keeps
                states[step].finish()
                if step in digests:
                    step_cache.store(digests[step], step, run.path, result,
                                     [r for r in run.metrics_rows() if r.get("step") == step])
                print(f"[ex08] {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)),
                      file=sys.stderr)
        last = [s for s in cfg.steps if s in summary["steps"]][-1]
        if last != "pretrain":
            final = load_step(run / CHECKPOINT_OF[last], "classifier")
            summary["model_bytes"] = save_step(final, "classifier", cfg, run / "model.pt", from_step=last)
            summary.update({k: summary["steps"][last][k]
                            for k in ("test100/acc", "test10k/acc", "val/acc", "val/loss")})
        try:
            summary["figures"] = summary.get("figures", []) + [str(plots.learning_curves(run / "metrics.jsonl",
                                                                                         run / "curves.png"))]
        except Exception as e:  # a plotting problem must not lose a finished training
            print(f"[ex08] plotting failed: {e}", file=sys.stderr)
        ae_params = summary["steps"].get("pretrain", {}).get("params")
        clf = summary["steps"].get(last, {}).get("params") if last != "pretrain" else None
        summary.update({"preset": cfg.preset, "final_step": last, "params": clf or ae_params,
                        "params_autoencoder": ae_params, "params_classifier": clf,
                        "wall_s": sum(s["wall_s"] for s in summary["steps"].values()),
                        "this_invocation_s": time.perf_counter() - t0, "since_process_start_s": since_process_start(),
                        "threads": threads, "device": str(device)})
        run.write_summary(summary)
        if tracker is not None:  # a study's one run: the final figures at the top level too
            tracker.summary({k: summary[k] for k in ("val/acc", "test100/acc", "test10k/acc") if k in summary})
    return summary


def replay_cached(step: str, hit: tuple[dict, list[dict]], run: RunDir, on_epoch, t_step: float) -> dict:
    """A step taken from the cache: its rows logged (and shown to ``on_epoch``, as a trained step's would be: a
    study's pruner counts them), its result marked with the entry it came from."""
    result, rows = hit
    run.keep_metrics(lambda row: row.get("step") != step)  # an interrupted attempt's rows (a resume) go
    for row in rows:
        row = {k: v for k, v in row.items() if k != "elapsed_s"}
        run.log_metrics({**row, "elapsed_s": since_process_start()})
        if on_epoch is not None:
            on_epoch(row["epoch"], row)
    result["cached"] = {"trained_in_s": result.get("wall_s")}
    result["wall_s"] = time.perf_counter() - t_step
    print(f"[ex08] {step}: from the step cache (trained in {result['cached']['trained_in_s']:.0f} s by an earlier "
          f"run; --no-cache trains it)", file=sys.stderr)
    return result


def step_state(run_dir: Path, step: str, cfg: AutoencoderConfig, resume: bool) -> TrainingState:
    """``step``'s training state in the run dir; on a resume, read back (and checked) when one was saved."""
    path = state_path(run_dir, step)
    saved = read_state(path, step) if resume and path.is_file() else None
    return TrainingState(path, step, saved=saved, resume=resume, config=to_dict(cfg), save_every_s=SAVE_EVERY_S)


def param_report(cfg: AutoencoderConfig) -> str:
    """Parameter counts of the preset's autoencoder and classifier, printed the way the seed prints them."""
    ae, clf = checkpoint.check_model_size(lambda: Autoencoder(cfg.model)), checkpoint.check_model_size(
        lambda: Classifier(cfg.model))
    return (f"autoencoder params: {millions(ae)} ({ae:,})   classifier params: {millions(clf)} ({clf:,})")
