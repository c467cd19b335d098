"""The shipped sweeps (``<name>.yaml``): Optuna search spaces and the tutorial's grids, package data of the wheel,
so ``--study kp`` finds ``kp.yaml`` from any directory, installed or not (:func:`studies.sweep.resolve_sweep_path`)."""
