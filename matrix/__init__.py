"""matrix: a declarative test-matrix engine for ML pipelines."""

__version__ = "0.1.0"
