"""runner: dynamical loss functions (Ruiz-Garcia et al. 2021; Lavin Pallero & Ruiz-Garcia 2024)."""

__all__ = ["Run", "load_run"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `python -m runner` can validate its config before paying for `import torch` (~2 s).
    if name in __all__:
        from runner import api

        return getattr(api, name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
