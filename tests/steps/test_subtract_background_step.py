import numpy as np
import pytest
from conftest import make_model
from helpers import assert_unchanged, snapshot
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.algorithms.background import median_error_factor
from jwst_klipprep.base import InputError
from jwst_klipprep.steps.subtract_background_step import SubtractBackgroundStep

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
NY, NX = 24, 28
yy, xx = np.mgrid[:NY, :NX]
PATTERN = 0.5 + 0.02 * xx + 0.01 * yy  # a smooth background with structure


def _target(name, targprop, *, psf=False, nints=3, seed=0, level=0.0):
    model = make_model(nints=nints, seed=seed, filename=name)
    model.data = (model.data + PATTERN + level).astype(np.float32)
    model.meta.target.proposer_name = targprop
    model.meta.exposure.psf_reference = psf
    return model


def _background(name, targprop, *, level, nints=4, seed=1, noise=0.0):
    model = make_model(nints=nints, seed=seed, filename=name, with_var=True)
    rng = np.random.default_rng(seed)
    data = PATTERN + level + noise * rng.normal(size=(nints, NY, NX))
    model.data = data.astype(np.float32)
    model.dq = np.zeros(model.data.shape, np.uint32)
    model.err = np.full(model.data.shape, 0.2, np.float32)
    model.meta.target.proposer_name = targprop
    model.meta.observation.bkgdtarg = True
    return model


def test_exact_subtraction_and_error(tmp_path):
    sci = _target("sci_calints.fits", "HD-1")
    expected = np.array(sci.data) - PATTERN - 3.0
    b1 = _background("bg1_calints.fits", "HD-1-BACKGROUND", level=3.0)
    b2 = _background("bg2_calints.fits", "HD-1-BACKGROUND", level=3.0, seed=2)
    b2.data[1, 10, 10] = 1e4  # one cosmic ray in one background integration: clipped
    snap = snapshot(sci)
    result = SubtractBackgroundStep.call([sci, b1, b2])
    assert_unchanged(sci, snap)
    out = result[0]
    # the target started as star + 1 + noise + PATTERN; the background is PATTERN + 3
    np.testing.assert_allclose(out.data, expected, atol=2e-5, equal_nan=True)
    # error of a median of 8 values with rms ERR 0.2
    err_bkg = np.full((NY, NX), median_error_factor(8) * 0.2 / np.sqrt(8))
    err_bkg[10, 10] = median_error_factor(7) * 0.2 / np.sqrt(7)  # the clipped cosmic ray
    finite = np.isfinite(snap["err"])
    np.testing.assert_allclose(out.err[finite], np.sqrt(snap["err"] ** 2 + err_bkg**2)[finite],
                               rtol=1e-5)
    np.testing.assert_allclose(out.var_rnoise[finite],
                               (snap["var_rnoise"] + err_bkg**2)[finite], rtol=1e-5)
    assert out.meta.cal_step.instance["subtract_background"] == "COMPLETE"
    rec = out.meta.instance["klipprep"]["subtract_background"]
    assert rec["background_files"] == ["bg1_calints.fits", "bg2_calints.fits"]
    assert rec["median_level_subtracted"] == pytest.approx([3.0 + np.median(PATTERN)] * 3,
                                                           abs=1e-5)
    assert result[1].meta.cal_step.instance["subtract_background"] == "SKIPPED"
    np.testing.assert_array_equal(result[1].data, b1.data)


def test_sci_and_ref_get_their_own_background(caplog):
    sci = _target("sci_calints.fits", "HD-1")
    ref = _target("ref_calints.fits", "HD-2", psf=True)
    bsci = _background("bgs_calints.fits", "HD-1-BACKGROUND", level=5.0)
    bref = _background("bgr_calints.fits", "HD-2-BACKGROUND", level=9.0)
    result = SubtractBackgroundStep.call([bref, sci, ref, bsci])
    levels = {m.meta.filename: m.meta.instance["klipprep"]["subtract_background"]
              for m in result}
    assert levels["sci_calints.fits"]["background_kind"] == "SCI_BG"
    assert levels["sci_calints.fits"]["background_files"] == ["bgs_calints.fits"]
    assert levels["ref_calints.fits"]["background_kind"] == "REF_BG"
    assert levels["ref_calints.fits"]["background_files"] == ["bgr_calints.fits"]
    np.testing.assert_allclose(result[1].data, np.array(sci.data) - PATTERN - 5.0, atol=2e-5)
    np.testing.assert_allclose(result[2].data, np.array(ref.data) - PATTERN - 9.0, atol=2e-5)
    assert "bgr_calints.fits is REF_BG (target name 'HD-2' matches a REF exposure)" in caplog.text


def test_one_kind_used_for_both_with_warning(caplog):
    sci = _target("sci_calints.fits", "HD-1")
    ref = _target("ref_calints.fits", "HD-2", psf=True)
    bsci = _background("bgs_calints.fits", "HD-1-BACKGROUND", level=5.0)
    result = SubtractBackgroundStep.call([sci, ref, bsci])
    assert "no REF_BG exposure; using the SCI_BG exposure(s) for the REF targets" in caplog.text
    np.testing.assert_allclose(result[1].data, np.array(ref.data) - PATTERN - 5.0, atol=2e-5)


def test_bkg_list_with_a_single_file(tmp_path):
    sci = _target("sci_calints.fits", "HD-1")
    bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=2.0)
    bkg.save(tmp_path / "bg_calints.fits")
    result = SubtractBackgroundStep.call(sci, bkg_list=[str(tmp_path / "bg_calints.fits")])
    np.testing.assert_allclose(result.data, np.array(sci.data) - PATTERN - 2.0, atol=2e-5)


def test_asn_with_background_member(tmp_path):
    from helpers import write_asn

    asn = write_asn(tmp_path)  # science, psf, background: same make_model data
    result = SubtractBackgroundStep.call(str(asn))
    statuses = [m.meta.cal_step.instance["subtract_background"] for m in result]
    assert statuses == ["COMPLETE", "COMPLETE", "SKIPPED"]


def test_no_background_skips(cube, caplog):
    result = SubtractBackgroundStep.call(cube)
    assert result.meta.cal_step.instance["subtract_background"] == "SKIPPED"
    assert "no background exposure" in caplog.text
    np.testing.assert_array_equal(result.data, cube.data)


@pytest.mark.parametrize("what", ["filter", "shape"])
def test_incompatible_background(what):
    sci = _target("sci_calints.fits", "HD-1")
    if what == "filter":
        bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=2.0)
        bkg.meta.instrument.filter = "F356W"
        match = "sci_calints.fits: FILTER F444W differs from that of its background bg_calints"
    else:
        bkg = make_model(nints=2, ny=20, nx=20, filename="bg_calints.fits")
        bkg.meta.observation.bkgdtarg = True
        bkg.meta.target.proposer_name = "HD-1-BG"
        match = r"frame shape \(24, 28\) differs"
    with pytest.raises(InputError, match=match):
        SubtractBackgroundStep.call([sci, bkg])


def test_pixel_without_background_is_flagged():
    sci = _target("sci_calints.fits", "HD-1")
    bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=2.0)
    bkg.data[:, 12, 13] = np.nan
    result = SubtractBackgroundStep.call([sci, bkg])
    assert np.all(result[0].dq[:, 12, 13] & DO_NOT_USE)
    assert np.all(np.isnan(result[0].data[:, 12, 13]))
    assert result[0].meta.instance["klipprep"]["subtract_background"]["n_no_background"] == 3


def test_time_chunks():
    sci = _target("sci_calints.fits", "HD-1", nints=4)
    bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=0.0, nints=4)
    bkg.data[2:] += 1.0  # the background rises half way through
    result = SubtractBackgroundStep.call([sci, bkg], nints_per_median=2)
    rec = result[0].meta.instance["klipprep"]["subtract_background"]
    assert rec["chunk_index"] == [0, 0, 1, 1]
    np.testing.assert_allclose(result[0].data[:2], np.array(sci.data[:2]) - PATTERN, atol=2e-5)
    np.testing.assert_allclose(result[0].data[2:], np.array(sci.data[2:]) - PATTERN - 1.0,
                               atol=2e-5)


def test_scale_mode_recovers_scale():
    rng = np.random.default_rng(5)
    glow = 3.0 * np.exp(-((xx - 5) ** 2) / 20.0) + PATTERN  # structure shared with the target
    sci = _target("sci_calints.fits", "HD-1")
    sci.data = (np.array(sci.data) - PATTERN + 1.3 * glow).astype(np.float32)
    bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=0.0, nints=6)
    bkg.data = (glow + 0.01 * rng.normal(size=bkg.data.shape)).astype(np.float32)
    result = SubtractBackgroundStep.call([sci, bkg], scale=True, transmission_min=0.0)
    rec = result[0].meta.instance["klipprep"]["subtract_background"]
    assert rec["scale"] == pytest.approx([1.3] * 3, abs=0.03)


def test_save_combined_background(tmp_path):
    sci = _target("sci_calints.fits", "HD-1")
    bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=2.0)
    SubtractBackgroundStep.call([sci, bkg], save_combined_background=True,
                                output_dir=str(tmp_path))
    assert (tmp_path / "bg_sci_bg_bkgcomb.fits").exists()


@pytest.mark.parametrize("level, warned", [(-0.8, True), (20.0, False)])
def test_warns_when_the_target_looks_already_subtracted(caplog, level, warned):
    """A target whose sky sits far below the background's (e.g. subtracted by another tool)
    gets a warning naming it; a target at the background's level does not."""
    sci = _target("sci_calints.fits", "HD-1", level=level)
    bkg = _background("bg_calints.fits", "HD-1-BACKGROUND", level=20.0)
    SubtractBackgroundStep.call([sci, bkg])
    assert ("sci_calints.fits (SCI): its sky level before subtraction" in caplog.text) is warned
    if warned:
        assert "was its background already subtracted" in caplog.text
