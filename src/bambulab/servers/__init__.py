"""Servers built on the library: the camera fan-out (and, later, the API proxy and farm)."""
