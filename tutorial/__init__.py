"""Tutorial 9's conv / batch-norm / dropout half, re-made as experiments on this repo's data: the slides' claims
(one module each), the grid studies that test them on ex09 (``sweeps/tutorial-*.yaml``) and the report that puts
each claim beside its numbers and figure (``python -m experiments.run tutorial``)."""
