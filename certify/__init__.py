"""certify: certified worst-case deviation bounds between a network and its coarse-grained explanation."""

__version__ = "0.2.0"
