"""cryptovol evaluator: predictions graded against their realized labels, live quality"""

__version__ = "0.1.0"
