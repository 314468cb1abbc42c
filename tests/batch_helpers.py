"""Helpers of the associate / batch tests: simulated programs, header edits, loopback network."""

import shutil
import socket
from pathlib import Path

from astropy.io import fits

from jwst_klipprep.simulate import simulate_dataset

LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: Pipeline arguments that keep a batch test short (the steps themselves are tested elsewhere).
LIGHT_ARGS = (
    "--steps.fix_bad_pixels.skip=True", "--steps.recenter_frames.skip=True",
    "--steps.update_nircam_centers.skip=True", "--steps.subtract_median.skip=True",
    "--save_diagnostics=False",
)


def loopback_only(monkeypatch):
    """Like conftest's ``no_network``, but let Dask talk to itself on 127.0.0.1."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo
    real_create = socket.create_connection

    def host_of(address):
        return address[0] if isinstance(address, tuple) else None

    def connect(self, address, *args, **kwargs):
        if isinstance(address, tuple) and host_of(address) not in LOOPBACK:
            raise RuntimeError(f"network access attempted in a test: {address}")
        return real_connect(self, address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK and host is not None:
            raise RuntimeError(f"network access attempted in a test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        if host_of(address) not in LOOPBACK:
            raise RuntimeError(f"network access attempted in a test: {address}")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)


def set_header(path, hdu=0, **values):
    """Rewrite header keywords of a FITS file in place (datamodels read FITS keywords first)."""
    with fits.open(path, mode="update") as hdul:
        for key, value in values.items():
            hdul[hdu].header[key] = value


def small_program(outdir, *, program="01184", filter_name=None, with_background=True, nints=1,
                  seed=0):
    """A simulated NIRCam program folder: 2 SCI, 1 REF (+ SCI_BG, REF_BG); returns its paths.

    ``filter_name`` rewrites the FILTER keyword of every file (the simulator has one filter per
    mask). The simulator's own ``asn.json`` and ``truth.json`` are removed, as in a MAST download.
    """
    data = simulate_dataset(outdir, nints=nints, n_reference=1, with_background=with_background,
                            program=program, seed=seed)
    data.asn_path.unlink()
    data.truth_path.unlink()
    paths = {Path(outdir) / name: kind for name, kind in data.paths.items()}
    if filter_name:
        for path in paths:
            set_header(path, FILTER=filter_name)
    return paths


def truncate(path, nbytes):
    """Cut a file to its first ``nbytes`` bytes (an interrupted download or write)."""
    with open(path, "r+b") as handle:
        handle.truncate(nbytes)


def copy_to(src, dst_dir):
    dst = Path(dst_dir) / Path(src).name
    shutil.copy(src, dst)
    return dst


