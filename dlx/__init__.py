"""dlx: a command-line experiment runner for deep learning on JAX."""

__version__ = "0.1.0"
