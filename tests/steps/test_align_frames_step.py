import numpy as np
import pytest
from conftest import make_model
from helpers import assert_unchanged, snapshot

from jwst_klipprep.base import InputError, ParameterError
from jwst_klipprep.keywords import get_center_yx
from jwst_klipprep.steps.align_frames_step import AlignFramesStep

SHIFT = (0.3, -0.7)


def _pair(jitter0=(0.0, 0.0)):
    """A science and a reference exposure, the reference's star offset by SHIFT.

    ``jitter0`` moves the star of the first science integration only (pointing jitter).
    """
    ny, nx = 48, 52
    yy, xx = np.mgrid[:ny, :nx]

    def star(cy, cx):
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        return 40 * np.exp(-r2 / (2 * 2.5**2)) + 8 * np.exp(-r2 / (2 * 6.0**2))

    rng = np.random.default_rng(3)
    models = []
    for i, (kind, (dy, dx)) in enumerate((("science", (0, 0)), ("psf", SHIFT))):
        model = make_model(nints=3, ny=ny, nx=nx, seed=i,
                           filename=f"jw0000{i + 1}001_03106_00001_nrcalong_calints.fits")
        data = star(24.2 + dy, 25.6 + dx) + rng.normal(0, 0.02, (3, ny, nx))
        if kind == "science":
            data[0] = star(24.2 + jitter0[0], 25.6 + jitter0[1]) + rng.normal(0, 0.02, (ny, nx))
        model.data = data.astype(np.float32)
        model.err = np.full(data.shape, 0.02, np.float32)
        model.dq = np.zeros(data.shape, np.uint32)
        model.meta.asn.exptype = kind
        model.meta.exposure.psf_reference = kind == "psf"
        model.meta.dither.x_offset = model.meta.dither.y_offset = 0.0
        models.append(model)
    return models


def test_known_shift_recovered_and_applied():
    sci, ref = _pair()
    snaps = snapshot(ref)
    result = AlignFramesStep.call([sci, ref], weighting="none")
    assert_unchanged(ref, snaps)
    rec = result[1].meta.instance["klipprep"]["align_frames"]
    np.testing.assert_allclose(rec["shift_yx"], [SHIFT] * 3, atol=0.01)
    assert np.all(np.array(rec["shift_err_yx"]) < 0.01)
    np.testing.assert_allclose(rec["applied_shift_yx"], [np.negative(SHIFT)] * 3, atol=0.01)
    # after alignment the reference star matches the science one
    diff = result[1].data[:, 10:-10, 10:-10] - result[0].data[0, 10:-10, 10:-10]
    assert np.nanmax(np.abs(diff)) < 0.2  # 40 peak, 0.02 noise
    # CRPIX followed the content; the saved summary keywords exist
    assert result[1].meta.wcsinfo.crpix1 == pytest.approx(ref.meta.wcsinfo.crpix1 - SHIFT[1],
                                                          abs=0.01)
    keys = {c[0] for c in result[1].extra_fits.SCI.header}
    assert {"ALGSHFTX", "ALGSHFTY", "ALGERRX", "ALGERRY"} <= keys
    assert result[1].meta.cal_step.instance["align_frames"] == "COMPLETE"


def test_record_only_mode_leaves_pixels():
    sci, ref = _pair()
    result = AlignFramesStep.call([sci, ref], apply=False, weighting="none")
    np.testing.assert_array_equal(result[1].data, ref.data)
    pending = result[1].meta.instance["klipprep"]["pending_shift_yx"]
    np.testing.assert_allclose(pending, [np.negative(SHIFT)] * 3, atol=0.01)
    assert get_center_yx(result[1], "crpix") == get_center_yx(ref, "crpix")


def test_needs_a_science_exposure():
    sci, ref = _pair()
    with pytest.raises(InputError, match="needs at least one science exposure"):
        AlignFramesStep.call([ref])


def test_median_reference():
    # the first science integration is off by a jitter: the first_integration reference carries
    # it into every shift, the median of the exposure (two of three integrations on target) not
    jitter = (0.25, 0.15)
    sci, ref = _pair(jitter0=jitter)
    first = AlignFramesStep.call([sci, ref], weighting="none", reference="first_integration")
    rec = first[1].meta.instance["klipprep"]["align_frames"]
    np.testing.assert_allclose(rec["shift_yx"], [np.subtract(SHIFT, jitter)] * 3, atol=0.01)
    result = AlignFramesStep.call([sci, ref], weighting="none", reference="median")
    rec = result[1].meta.instance["klipprep"]["align_frames"]
    assert rec["reference_mode"] == "median"
    np.testing.assert_allclose(rec["shift_yx"], [SHIFT] * 3, atol=0.02)
    # the science exposure itself: integrations 1-2 need no shift to the median, 0 the jitter
    own = result[0].meta.instance["klipprep"]["align_frames"]["shift_yx"]
    np.testing.assert_allclose(own, [jitter, (0, 0), (0, 0)], atol=0.02)


def test_all_nan_integration_is_skipped_and_headers_stay_finite(tmp_path):
    sci, ref = _pair()
    ref.data[1] = np.nan
    result = AlignFramesStep.call([sci, ref], weighting="none")
    rec = result[1].meta.instance["klipprep"]["align_frames"]
    assert rec["failed"] == [False, True, False]
    np.testing.assert_allclose(rec["shift_yx"], [SHIFT] * 3, atol=0.01)  # median for the dead one
    cards = {c[0]: c[1] for c in result[1].extra_fits.SCI.header}
    assert all(np.isfinite(cards[k]) for k in ("ALGSHFTX", "ALGSHFTY", "ALGERRX", "ALGERRY"))
    result[1].save(tmp_path / "x.fits")  # NaN in a header would fail here


def test_large_flux_units_give_the_same_shifts():
    """Units far from 1 (below the 1e20 limit of absurd values) fit like ordinary data."""
    sci, ref = _pair()
    plain = AlignFramesStep.call([sci, ref], weighting="none", apply=False)
    for model in (sci, ref):
        model.data = model.data * np.float32(1e15)
        model.err = model.err * np.float32(1e15)
    scaled = AlignFramesStep.call([sci, ref], weighting="none", apply=False)
    a, b = (r[1].meta.instance["klipprep"]["align_frames"] for r in (plain, scaled))
    np.testing.assert_allclose(b["shift_yx"], a["shift_yx"], atol=1e-4)
    np.testing.assert_allclose(b["shift_yx"], [SHIFT] * 3, atol=0.01)


def test_empty_input_names_the_problem():
    from jwst.datamodels import ModelContainer

    with pytest.raises(InputError, match="no exposure to process"):
        AlignFramesStep().process(ModelContainer())


def test_even_smooth_err_is_refused():
    sci, ref = _pair()
    with pytest.raises(ParameterError, match="smooth_err must be odd"):
        AlignFramesStep.call([sci, ref], smooth_err=4)
