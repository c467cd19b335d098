"""A trial's files in Optuna's artifact store: uploaded when the trial ends (its best checkpoint, record and
figures), and the best trial's fetched back by ``report`` from any machine that sees the store (the store itself:
:func:`studies.storage.artifact_store`)."""
from __future__ import annotations

import sys
from pathlib import Path

from common.errors import ConfigError
from studies.constraints import best_trial

ARTIFACT_FILES = ("best.pt", "model.pt", "summary.json", "config.json", "run.json")


def upload_trial_artifacts(trial, run_dir: Path, store) -> dict[str, str]:
    """A trial's best checkpoint, record and figures into the artifact store; ``{file name: artifact id}``."""
    from optuna.artifacts import upload_artifact

    files = [run_dir / name for name in ARTIFACT_FILES if (run_dir / name).is_file()]
    files += sorted(run_dir.glob("*.png"))
    return {f.name: upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=trial) for f in files}


def fetch_best_artifacts(study, store, dest: Path) -> dict[str, Path]:
    """The best trial's files (checkpoint, record, figures) from the artifact store into ``dest``: from any
    machine that sees the store, whichever machine ran the trial. Only files an earlier fetch wrote are replaced
    (``dest``'s manifest, :mod:`common.files.owned_files`); a file of the user's with the same name is left as it is."""
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    from common.files.owned_files import OwnedFolder

    best = best_trial(study)
    ids = best.user_attrs.get("artifacts", {}) if best is not None else {}
    if not ids:
        return {}
    folder = OwnedFolder(dest, "report")
    dest.mkdir(parents=True, exist_ok=True)
    fetched = {}
    for name, artifact_id in ids.items():
        try:
            folder.check([name])
        except ConfigError as e:
            print(f"[report] {e}".replace(" (nothing was written)", ""), file=sys.stderr)
            continue
        folder.forget(name)  # ours from an earlier fetch (download_artifact never overwrites)
        try:
            download_artifact(artifact_store=store, file_path=str(dest / name), artifact_id=artifact_id)
        except ArtifactNotFound:  # a trial of another machine (a committed journal) whose store is not here
            print(f"[report] the best trial's {name} is not in {getattr(store, '_base_path', 'the artifact store')}: "
                  f"it ran on {best.user_attrs.get('host', 'another machine')} (give --artifacts where its store is "
                  "mounted, or retrain it with --retrain-best)", file=sys.stderr)
            continue
        fetched[name] = folder.record(name)
    return fetched
