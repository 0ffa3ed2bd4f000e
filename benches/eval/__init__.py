"""The cases and methods of ``benches/eval_models.py``."""
