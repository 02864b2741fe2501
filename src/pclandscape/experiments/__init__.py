"""One module per figure group of the paper; see :mod:`pclandscape.experiments.runner`.

Importing this package does not import the experiments (they load on demand).
"""

from .runner import EXPERIMENTS, get, load_results, make_config, run_experiment

__all__ = ["EXPERIMENTS", "get", "make_config", "run_experiment", "load_results"]
