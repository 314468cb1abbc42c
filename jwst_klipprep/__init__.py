"""jwst_klipprep: prepare JWST coronagraphic stage-2 products for KLIP, as stpipe steps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jwst-klipprep")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
