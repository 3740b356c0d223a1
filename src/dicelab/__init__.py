"""dicelab: inject, search, measure and explain randomness in deep-network training."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dicelab")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
