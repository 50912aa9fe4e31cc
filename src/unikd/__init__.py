"""unikd: knowledge distillation and self-distillation for classifiers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
