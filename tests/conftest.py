"""Shared fixtures: tiny synthetic NIRCam / MIRI coronagraphic models, and offline guards."""

import logging
import os
import socket
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

# Steps must work with no CRDS variable set; make sure none leaks in from the environment.
for _var in ("CRDS_SERVER_URL", "CRDS_PATH", "CRDS_CONTEXT", "STPIPE_DISABLE_CRDS_STEPPARS"):
    os.environ.pop(_var, None)

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]

# Property tests (tests/algorithms/test_properties_*.py): a bounded, reproducible example count so
# that they run in CI in well under a minute; HYPOTHESIS_PROFILE=thorough for a longer search.
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, print_blob=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", max_examples=500, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def isolated_log_handlers():
    """Restore the logging handlers after each test.

    An in-process ``strun`` (stpipe's command line) attaches handlers that write to the
    ``sys.stderr`` of that moment, pytest's capture stream of that test; a later test logging
    through them would print "--- Logging error ---" tracebacks into its own captured output.
    """
    names = ("", "stpipe", "jwst", "jwst_klipprep", "py.warnings")
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level)
             for name in names}
    yield
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that tries to reach the network."""

    def guard(*args, **kwargs):
        raise RuntimeError(f"network access attempted in a test: {args}")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "getaddrinfo", guard)
    monkeypatch.setattr(socket, "create_connection", guard)


def make_model(nints=3, ny=24, nx=28, *, image=False, instrument="NIRCAM", seed=0,
               with_var=True, filename="jw01234001001_03106_00001_nrcalong_calints.fits"):
    """A small coronagraphic model with a star-like blob, NaNs and flags."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:ny, :nx]
    cy, cx = (ny - 1) / 2 + 0.3, (nx - 1) / 2 - 0.2
    star = 50.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
    data = (star + 1.0 + rng.normal(0, 0.1, (nints, ny, nx))).astype(np.float32)
    err = np.full_like(data, 0.1)
    dq = np.zeros(data.shape, np.uint32)
    data[:, 2, 3] = np.nan
    dq[:, 2, 3] = DO_NOT_USE
    data[1 % nints, 5, 6] = np.nan
    err[0, 7, 8] = np.nan
    if image:
        model = datamodels.ImageModel(data=data[0], err=err[0], dq=dq[0])
    else:
        model = datamodels.CubeModel(data=data, err=err, dq=dq)
    if with_var:
        for name, frac in (("var_poisson", 0.6), ("var_rnoise", 0.35), ("var_flat", 0.05)):
            var = (err**2 * frac).astype(np.float32)
            setattr(model, name, var[0] if image else var)
    meta = model.meta
    meta.filename = filename
    meta.telescope = "JWST"
    if instrument == "NIRCAM":
        meta.instrument.name = "NIRCAM"
        meta.instrument.detector = "NRCALONG"
        meta.instrument.channel = "LONG"
        meta.instrument.module = "A"
        meta.instrument.filter = "F444W"
        meta.instrument.pupil = "MASKRND"
        meta.instrument.coronagraph = "MASKA335R"
        meta.exposure.type = "NRC_CORON"
        meta.aperture.name = "NRCA5_MASK335R"
        meta.subarray.name = "SUB320A335R"
    else:
        meta.instrument.name = "MIRI"
        meta.instrument.detector = "MIRIMAGE"
        meta.instrument.filter = "F1140C"
        meta.instrument.coronagraph = "4QPM_1140"
        meta.exposure.type = "MIR_4QPM"
        meta.subarray.name = "MASK1140"
    meta.exposure.nints = 1 if image else nints
    meta.subarray.xstart, meta.subarray.ystart = 1, 1
    meta.subarray.xsize, meta.subarray.ysize = nx, ny
    meta.wcsinfo.crpix1 = cx + 1.0
    meta.wcsinfo.crpix2 = cy + 1.0
    meta.wcsinfo.roll_ref = 10.0
    meta.observation.date = "2025-01-01"
    meta.observation.time = "00:00:00"
    return model


@pytest.fixture
def cube():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = make_model()
    yield model
    model.close()


@pytest.fixture
def image():
    model = make_model(image=True)
    yield model
    model.close()


@pytest.fixture(params=["cube", "image"])
def any_model(request):
    model = make_model(image=request.param == "image")
    yield model
    model.close()
