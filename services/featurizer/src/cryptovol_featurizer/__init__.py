"""cryptovol featurizer: windowed features from ticks.raw to ticks.features and Parquet"""

__version__ = "0.1.0"
