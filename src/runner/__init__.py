"""runner: dynamical loss functions (Ruiz-Garcia et al. 2021; Lavin Pallero & Ruiz-Garcia 2024)."""

from runner.api import Run, load_run

__all__ = ["Run", "load_run"]
__version__ = "0.1.0"
