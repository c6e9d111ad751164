"""The installed st-oblique release (read by packaging and written into every saved model's requirements)."""

__version__ = "0.2.0"
