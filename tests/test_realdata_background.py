"""Validation of subtract_background on the real MIRI frames (skipped without ../shared)."""

from pathlib import Path

import numpy as np
import pytest
from stdatamodels.jwst import datamodels

from jwst_klipprep.steps.subtract_background_step import SubtractBackgroundStep

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "miri_hd106906_f1140c"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REAL.is_dir(), reason="real MIRI frames not available"),
]
BG1 = "jw01277022001_02101_00001_mirimage_calints.fits"
BG2 = "jw01277022001_02101_00002_mirimage_calints.fits"
REF_BG = "jw01194019001_02101_00002_mirimage_calints.fits"
REF = "jw01194015001_04101_00001_mirimage_calints.fits"


def _open(name):
    return datamodels.open(REAL / name)


def test_one_background_dither_minus_the_other(caplog):
    """An independent check found median -0.15 and std 0.49 MJy/sr for this difference."""
    target = _open(BG1)
    target.meta.target.proposer_name = "HD-106906"
    target.meta.observation.bkgdtarg = False
    out = SubtractBackgroundStep.call([target, _open(BG2)])[0]
    data = out.data[np.isfinite(out.data)]
    assert np.median(data) == pytest.approx(-0.15, abs=0.02)
    assert np.std(data) == pytest.approx(0.49, abs=0.02)
    # the real file's VAR_* arrays (224x288) do not match its cropped SCI (210x215): dropped
    assert "VAR_POISSON has shape (2, 224, 288) but SCI has (1, 210, 215)" in caplog.text
    assert out.var_poisson is None
    assert out.err.shape == out.data.shape


def test_reference_gets_its_own_background_and_scale():
    ref, ref_bg, bg1, bg2 = _open(REF), _open(REF_BG), _open(BG1), _open(BG2)
    science = _open(BG1)  # a stand-in science exposure: HD-106906's own background name
    science.meta.target.proposer_name = "HD-106906"
    science.meta.observation.bkgdtarg = False
    result = SubtractBackgroundStep.call([science, ref, ref_bg, bg1, bg2])
    rec = result[1].meta.instance["klipprep"]["subtract_background"]
    assert rec["background_kind"] == "REF_BG"
    assert rec["background_files"] == [REF_BG]
    assert result[0].meta.instance["klipprep"]["subtract_background"]["background_files"] == [
        BG1, BG2]
    # the REF_BG visit is ~3 MJy/sr brighter than the SCI_BG one: the scale fit absorbs it
    rb = _open(REF_BG)
    rb.meta.target.proposer_name = "HD-106906"
    rb.meta.observation.bkgdtarg = False
    fit = SubtractBackgroundStep.call([rb, bg1, bg2], scale=True)[0]
    level = fit.meta.instance["klipprep"]["subtract_background"]
    assert level["scale"][0] == pytest.approx(1.044, abs=0.01)
    assert abs(np.nanmedian(fit.data)) < 0.1
