"""cryptovol consumer: ticks.features to the prediction API and predictions.log"""

__version__ = "0.1.0"
