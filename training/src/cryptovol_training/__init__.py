"""cryptovol training: labels, walk-forward evaluation, models, MLflow tracking and registry"""

__version__ = "0.1.0"
