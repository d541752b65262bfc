"""edgefleet: ship machine-learning models from a cloud controller to a fleet of edge devices."""

__version__ = "0.1.0"
