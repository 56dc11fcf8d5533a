"""recstack: a complete recommender system, from raw interactions to recommendations on a screen."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recstack")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
