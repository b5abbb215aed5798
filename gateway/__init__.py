"""yrdx: the Yangtze River Delta data-exchange gateway."""

__version__ = "0.1.0"
