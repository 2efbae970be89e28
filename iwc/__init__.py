"""iwc: a reproducible submission kit for the iWildCam 2020 camera-trap competition."""

__version__ = "0.1.0"
