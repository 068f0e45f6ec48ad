"""``deepprompt sweep``: hyper-parameter search on Optuna whose trials are real launcher runs
(study.py), k-fold scoring (``task.folds``), an honest report (report.py); runs.py is the one copy
of run launching and score aggregation, shared with benchmarks/. A top-level driver like
``launcher/``: it starts runs as subprocesses and reads their files; nothing below imports it."""
