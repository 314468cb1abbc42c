import numpy as np
import pytest
from conftest import make_model
from helpers import assert_unchanged, snapshot
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.steps.fix_bad_pixels_step import FixBadPixelsStep

DNU = dqflags.pixel["DO_NOT_USE"]
FE = dqflags.pixel["FLUX_ESTIMATED"]
OUTLIER = dqflags.pixel["OUTLIER"]
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]
SATURATED = dqflags.pixel["SATURATED"]


def _model(nints=6):
    model = make_model(nints=nints, ny=40, nx=44, seed=7)
    truth = np.array(model.data, float)
    data = np.array(model.data)
    data[:, 2, 3] = truth[:, 3, 3]  # make_model's NaN: give it a plausible true value
    truth[:, 2, 3] = truth[:, 3, 3]
    data[:, 2, 3] = np.nan
    data[1, 5, 6] = np.nan
    truth[1, 5, 6] = truth[0, 5, 6]
    data[:, 30, 10] += 5.0  # unflagged hot pixel: 50 sigma, every integration
    data[min(2, nints - 1), 25, 30] += 3.0  # a cosmic ray in one integration
    model.data = data
    dq = np.array(model.dq)
    dq[:, 2, 3] |= SATURATED  # other bits must survive
    dq[:, 0, 40:] |= DNU | NON_SCIENCE
    data = np.array(model.data)
    data[:, 0, 40:] = np.nan
    model.data = data
    model.dq = dq
    return model, truth


def test_detects_repairs_and_flags():
    model, truth = _model()
    snap = snapshot(model)
    result = FixBadPixelsStep.call(model)
    assert_unchanged(model, snap)
    dq = result.dq
    # DO_NOT_USE NaN pixel: repaired, flagged FLUX_ESTIMATED, DO_NOT_USE cleared, SATURATED kept
    assert np.all(dq[:, 2, 3] & FE) and not np.any(dq[:, 2, 3] & DNU)
    assert np.all(dq[:, 2, 3] & SATURATED)
    # the unflagged hot pixel and the cosmic ray were found (OUTLIER) and repaired near the truth
    assert np.all(dq[:, 30, 10] & OUTLIER) and np.all(dq[:, 30, 10] & FE)
    assert dq[2, 25, 30] & OUTLIER
    for idx in ((slice(None), 30, 10), (2, 25, 30), (slice(None), 2, 3), (1, 5, 6)):
        assert np.all(np.abs(result.data[idx] - truth[idx]) < 5 * result.err[idx]), idx
    # repaired ERR reflects the estimate, ERR^2 = sum of VARs there too
    total = result.var_poisson + result.var_rnoise + result.var_flat
    np.testing.assert_allclose(total[:, 30, 10], result.err[:, 30, 10] ** 2, rtol=1e-4)
    # NON_SCIENCE pixels left alone, nothing else changed much
    assert np.all(np.isnan(result.data[:, 0, 40:])) and np.all(dq[:, 0, 40:] & NON_SCIENCE)
    changed = (dq & (FE | OUTLIER)) != 0
    assert changed.sum() <= 6 * 3 + 3  # 2,3 x6 + 30,10 x6 + 5,6 + 25,30 (+ a little slack)
    rec = result.meta.instance["klipprep"]["fix_bad_pixels"]
    assert rec["n_unrepaired"] == 0
    assert result.meta.cal_step.instance["fix_bad_pixels"] == "COMPLETE"


def test_temporal_needs_enough_integrations(caplog):
    model, _ = _model(nints=2)
    result = FixBadPixelsStep.call(model, find=["dq", "temporal"], fix=["interp"])
    assert "find=temporal skipped (2 integration(s) < min_nints 3)" in caplog.text
    assert result.meta.instance["klipprep"]["fix_bad_pixels"]["found"]["temporal"] == 0


def test_custom_pixels_and_unrepairable():
    model, _ = _model()
    result = FixBadPixelsStep.call(model, find=["custom"], fix=["temporal"],
                                   custom_pixels=[10, 11])
    assert np.all(result.dq[:, 10, 11] & OUTLIER)
    # a pixel bad in every integration cannot be repaired temporally: stays NaN + DO_NOT_USE
    assert np.all(np.isnan(result.data[:, 10, 11])) and np.all(result.dq[:, 10, 11] & DNU)
    assert not np.any(result.dq[:, 10, 11] & FE)


def test_custom_mask_file(tmp_path):
    from astropy.io import fits

    model, _ = _model()
    mask = np.zeros((40, 44), np.uint8)
    mask[20, 21] = 1
    fits.writeto(tmp_path / "mask.fits", mask)
    result = FixBadPixelsStep.call(model, find=["custom"], fix=["interp"],
                                   custom_mask=str(tmp_path / "mask.fits"))
    assert np.all(result.dq[:, 20, 21] & FE)


@pytest.mark.parametrize("kwargs,match", [
    ({"find": ["dq", "sigclip"]}, r"unknown find method\(s\) \['sigclip'\]"),
    ({"fix": ["medfilt"]}, r"unknown fix method\(s\) \['medfilt'\]"),
    ({"find": ["custom"]}, "find=custom needs custom_mask or custom_pixels"),
])
def test_bad_parameters(cube, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixBadPixelsStep.call(cube, **kwargs)


def test_sigma_reaches_the_detectors():
    """A step parameter changes the result: a 12-sigma hot pixel is found at sigma=5, not 30."""
    model, _ = _model()
    data = np.array(model.data)
    err = np.array(model.err)
    data[:, 34, 36] += 12 * err[:, 34, 36]
    model.data = data
    low = FixBadPixelsStep.call(model, find=["temporal", "spatial"], sigma=5.0)
    high = FixBadPixelsStep.call(model, find=["temporal", "spatial"], sigma=30.0)
    assert np.all(low.dq[:, 34, 36] & OUTLIER)
    assert not np.any(high.dq[:, 34, 36] & OUTLIER)
    rec_low = low.meta.instance["klipprep"]["fix_bad_pixels"]
    rec_high = high.meta.instance["klipprep"]["fix_bad_pixels"]
    assert rec_low["sigma"] == 5.0 and rec_high["sigma"] == 30.0
    assert rec_low["n_detected_new"] > rec_high["n_detected_new"]


# ----------------------------------------------------------------------------- association
NY = NX = 64
NINTS = 4
CLUSTER3 = (slice(40, 43), slice(44, 47))
CLUSTER2 = (slice(12, 14), slice(50, 52))
HOT = (50, 12)
COLUMN = (slice(8, 20), 20)
SCENES = [("AU-MIC", 10.0), ("AU-MIC", 20.0), ("REF", 10.0), ("REF", 10.0)]
SOURCES = [[(25.3, 52.6, 60.0), (52.7, 30.2, 300.0)], [(30.6, 10.4, 40.0)],
           [(55.2, 50.3, 150.0), (20.4, 40.7, 25.0)], [(8.6, 40.2, 80.0)]]


def _airy(y, x, lam_over_d=2.8, oversample=4):
    from scipy import special

    yy, xx = np.mgrid[:NY, :NX].astype(float)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    out = np.zeros((NY, NX))
    for dy in sub:
        for dx in sub:
            r = np.hypot(yy + dy - y, xx + dx - x) * np.pi / lam_over_d
            r = np.where(r == 0, 1e-9, r)
            out += (2 * special.j1(r) / r) ** 2
    return out / out.max()


def _exposure(e):
    """A flat-sky exposure with the detector's defects and sky sources of its own."""
    model = make_model(nints=NINTS, ny=NY, nx=NX, seed=20 + e,
                       filename=f"jw01184{e + 1:03d}001_03106_00001_nrcalong_calints.fits")
    rng = np.random.default_rng(e)
    err = np.full((NINTS, NY, NX), 0.1, np.float32)
    src = sum(peak * 0.1 * _airy(y, x) for y, x, peak in SOURCES[e])
    truth = np.repeat((1.0 + src)[None], NINTS, axis=0).astype(np.float32)
    data = truth + (rng.normal(size=truth.shape) * err).astype(np.float32)
    for where, amp in ((CLUSTER3, 40), (CLUSTER2, 25), (HOT, 15), (COLUMN, 30)):
        data[(slice(None), *where)] += amp * 0.1
    model.data, model.err = data, err
    model.dq = np.zeros(data.shape, np.uint32)
    for name, frac in (("var_poisson", 0.6), ("var_rnoise", 0.35), ("var_flat", 0.05)):
        setattr(model, name, (err**2 * frac).astype(np.float32))
    model.meta.target.catalog_name, model.meta.wcsinfo.roll_ref = SCENES[e]
    return model, truth


def _defect_mask():
    m = np.zeros((NY, NX), bool)
    for where in (CLUSTER3, CLUSTER2, HOT, COLUMN):
        m[where] = True
    return m


def _source_mask(e):
    yy, xx = np.mgrid[:NY, :NX]
    m = np.zeros((NY, NX), bool)
    for y, x, _ in SOURCES[e]:
        m |= np.hypot(yy - y, xx - x) <= 3
    return m


def test_association_defects_found_sources_untouched(tmp_path):
    from jwst.datamodels import ModelContainer

    from jwst_klipprep.diagnostics import write_defect_map

    built = [_exposure(e) for e in range(4)]
    container = ModelContainer([m for m, _ in built])
    snaps = [snapshot(m) for m, _ in built]
    step = FixBadPixelsStep()
    result = step.run(container)
    for (model, _), snap in zip(built, snaps, strict=True):
        assert_unchanged(model, snap)
    defect = _defect_mask()
    for e, (out, ((model, truth))) in enumerate(zip(result, built, strict=True)):
        dq = out.dq
        assert np.all(dq[:, defect] & OUTLIER) and np.all(dq[:, defect] & FE)
        z = (out.data[:, defect] - truth[:, defect]) / out.err[:, defect]
        assert np.abs(z).max() < 5
        src = _source_mask(e)
        assert not np.any(dq[:, src] & (OUTLIER | FE))  # 0 sky-source pixels flagged
        np.testing.assert_array_equal(out.data[:, src], model.data[:, src])  # flux unchanged
        # nothing else was touched
        assert not np.any(dq[:, ~defect] & (OUTLIER | FE))
        rec = out.meta.instance["klipprep"]["fix_bad_pixels"]
        assert rec["persistent"]["evidence"] == "association"
        assert rec["persistent"]["n_exposures"] == 4 and rec["persistent"]["n_scenes"] == 3
        assert rec["persistent"]["kinds"] == {"isolated": 1, "cluster": 13, "line": 12}
        assert rec["found_kind"]["persistent_cluster"] == 13 * NINTS
        assert rec["found"]["persistent"] == 26 * NINTS
        assert rec["repaired_kind"]["persistent_line"] == 12 * NINTS
    assert list(step.defect_maps) == ["NIRCAM/NRCALONG/SUB320A335R/64x64"]
    png = write_defect_map(step.defect_maps, tmp_path / "defects.png")
    assert (tmp_path / "defects.png").stat().st_size > 1000 and png.endswith("defects.png")


def test_single_file_uses_per_file_evidence():
    model, truth = _exposure(0)
    result = FixBadPixelsStep.call(model, find=["persistent"], fix=["interp"])
    defect = _defect_mask()
    assert np.all(result.dq[:, defect] & FE)
    assert not np.any(result.dq[:, _source_mask(0)] & (OUTLIER | FE))
    rec = result.meta.instance["klipprep"]["fix_bad_pixels"]
    assert rec["persistent"]["evidence"] == "per-file"
    assert rec["persistent"]["n_psf_like_rejected"] > 0


def test_dq_flags_by_value_and_dilate():
    model, _ = _model()
    dq = np.array(model.dq)
    dq[:, 20, 22] |= 2048  # a flag chosen by its integer value
    model.dq = dq
    result = FixBadPixelsStep.call(model, find=["dq"], fix=["interp"], dq_flags="DO_NOT_USE,2048",
                                   dilate=1)
    assert np.all(result.dq[:, 19:22, 21:24] & FE)
    rec = result.meta.instance["klipprep"]["fix_bad_pixels"]
    assert rec["found"]["dilate"] > 0 and rec["dilate"] == 1
    with pytest.raises(ValueError, match="not a single flag"):
        FixBadPixelsStep.call(model, find=["dq"], dq_flags="3")
    with pytest.raises(ValueError, match="unknown DQ flag"):
        FixBadPixelsStep.call(model, find=["dq"], dq_flags="NOT_A_FLAG")


@pytest.mark.parametrize(("instrument", "detector", "filt", "scale"), [
    ("NIRCAM", "NRCALONG", "F444W", 0.063),
    ("NIRCAM", "NRCA2", "F210M", 0.031),  # SW pixels: capped at Nyquist
    ("MIRI", "MIRIMAGE", "F1140C", 0.11),
])
def test_band_limit_follows_filter_and_pixel_scale(instrument, detector, filt, scale):
    """cutoff (and the shape test's lambda/D) = 0.36 cycles/px at 4.4 um on 0.063" pixels."""
    from jwst_klipprep.psf.builtin import FILTERS

    model = make_model(instrument=instrument)
    model.meta.instrument.detector = detector
    model.meta.instrument.filter = filt
    if instrument == "NIRCAM":
        model.meta.instrument.channel = "LONG" if detector.endswith("LONG") else "SHORT"
    expected = min(0.5, 0.36 * 4.4 / FILTERS[filt].center_um * scale / 0.063)
    assert FixBadPixelsStep()._cutoff(model) == pytest.approx(expected, rel=1e-6)
    if filt == "F1140C":
        assert 0.2 < expected < 0.3
