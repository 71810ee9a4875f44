"""cryptovol API: FastAPI /predict, /health, /version, /metrics"""

__version__ = "0.1.0"
