"""``i2dl dashboard --study kp``: a study in the browser while it runs (trials, intermediate values, parameter
importances, each trial's artifacts), served by optuna-dashboard from the study's own storage and artifact store,
as they are. The server binds to the loopback address unless ``--host`` says otherwise (the dashboard can also
rename and delete studies: it is not for an open network), and the storage URL is printed without its password."""
from __future__ import annotations

import sys
from pathlib import Path

from common.errors import ConfigError


def serve(study: str, *, out: Path | None = None, storage: str | None = None, artifacts: Path | None = None,
          host: str = "127.0.0.1", port: int = 8080, study_name: str | None = None) -> int:
    """Serve the study until Ctrl-C or SIGTERM; prints the study's URL first (``port`` 0: any free port)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from common.run.signals import check_interrupted, exit_code
    from studies.search import load_study
    from studies.storage import artifact_store, open_storage, redact, storage_url
    from studies.study_dir import study_dir_of
    from studies.workers import open_sweep

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port (0-65535; 0: any free one)")
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError("the dashboard needs optuna-dashboard, an optional dependency: pip install "
                          "'i2dl-lab[dashboard]'") from None
    sweep, _ = open_sweep(study, study_name=study_name)
    study_dir = study_dir_of(sweep, out)
    url = storage_url(storage, study_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no study storage at {url[len('sqlite:///'):]}: run the study first, or pass "
                          "--out/--storage where it lives")
    store = open_storage(url, sweep.storage)
    load_study(sweep, url, store)  # a clear error when the storage does not hold it
    store_dir = Path(artifacts or study_dir / "artifacts")
    app = optuna_dashboard.wsgi(store, artifact_store=artifact_store(store_dir) if store_dir.is_dir() else None)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would bury the URL
            pass

    try:
        server = make_server(host, port, app, handler_class=Quiet)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror}); give another --port") from None
    study_id = store.get_study_id_from_name(sweep.study)
    shown = f"[{host}]" if ":" in host else host
    print(f"[dashboard] study {sweep.study} in {redact(url)}"
          + (f", artifacts {store_dir}" if store_dir.is_dir() else "") + "; Ctrl-C stops the server", file=sys.stderr)
    print(f"http://{shown}:{server.server_port}/dashboard/studies/{study_id}", flush=True)
    server.timeout = 0.5
    try:
        while True:  # not serve_forever: a Ctrl-C landing in a garbage-collector callback is dropped there, and
            server.handle_request()  # the loop must raise it again (common.run.signals.check_interrupted)
            check_interrupted()
    except KeyboardInterrupt as e:
        return exit_code(e)
    finally:
        server.server_close()
