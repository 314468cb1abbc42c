"""Keep third-party imports offline: pysiaf's online PRD check at import time.

``import pysiaf`` (0.2x) calls ``requests.get(<github page>)`` with no timeout to compare its
bundled PRD version with the newest one online, on every import, on every offline run (it hangs
for as long as the network lets it, and logs a warning when it fails).  jwst_klipprep only reads
the bundled PRD, so `install` adds an import hook that runs pysiaf's module code with
``requests.get`` raising at once (and its "cannot be checked" notice dropped); pysiaf then
works normally with its bundled PRD.  Nothing else is changed, and a pysiaf imported before is
left alone.
"""

import importlib.abc
import importlib.machinery
import logging
import sys

__all__ = ["install"]


class _DropPrdNotice(logging.Filter):
    """Drop pysiaf's "PRD VERSION ... CANNOT BE CHECKED" notice: not checking is intended."""

    def filter(self, record):
        return "PRD VERSION" not in record.getMessage()


class _NoNetworkLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            import requests
        except ImportError:  # pragma: no cover - pysiaf needs requests
            return self._loader.exec_module(module)

        def offline_get(url, *args, **kwargs):
            raise requests.ConnectionError(f"jwst_klipprep: offline, not fetching {url}")

        original = requests.get
        requests.get = offline_get
        siaf_log = logging.getLogger("pysiaf")
        quiet = _DropPrdNotice()
        siaf_log.addFilter(quiet)
        try:
            self._loader.exec_module(module)
        finally:
            requests.get = original
            siaf_log.removeFilter(quiet)


class _PysiafFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "pysiaf":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _NoNetworkLoader(spec.loader)
        return spec


def install():
    """Install the hook once (no effect when pysiaf is already imported)."""
    if "pysiaf" in sys.modules or any(isinstance(f, _PysiafFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PysiafFinder())
