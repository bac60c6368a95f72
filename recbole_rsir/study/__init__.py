"""The evidence: RSIR against its base, augmentation baselines and its own ablations.

``python -m recbole_rsir.study`` plans the runs (plan.py), runs each in its own process
(worker.py, scheduled by runner.py), and rebuilds the report from their results (report.py).
"""
