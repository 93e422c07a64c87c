"""bambulab: the Python toolkit for Bambu Lab 3D printers."""

__version__ = "0.1.0"
