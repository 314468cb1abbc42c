import numpy as np
import pytest
from helpers import snapshot

from jwst_klipprep.algorithms.nircam_mask_centers import mask_center_correction
from jwst_klipprep.keywords import get_center_yx
from jwst_klipprep.steps.pad_frames_step import PadFramesStep
from jwst_klipprep.steps.update_nircam_centers_step import UpdateNircamCentersStep


def _nrca5(model):
    model.meta.aperture.name = "NRCA5_MASK335R"
    model.meta.instrument.filter = "F444W"
    model.meta.wcsinfo.crpix1, model.meta.wcsinfo.crpix2 = 150.2, 174.6  # SIAF PRD-075
    return model


def test_tutorial_example(cube):
    """spaceKLIP tutorial: NRCA5_MASK335R + F444W, (150.20, 174.60) -> (150.377, 174.395)."""
    before = snapshot(_nrca5(cube))
    result = UpdateNircamCentersStep.call(cube)
    assert result.meta.wcsinfo.crpix1 == pytest.approx(150.377)
    assert result.meta.wcsinfo.crpix2 == pytest.approx(174.395)
    assert get_center_yx(result, "mask") == pytest.approx((173.395, 149.377))
    np.testing.assert_array_equal(result.data, before["data"])
    assert (cube.meta.wcsinfo.crpix1, cube.meta.wcsinfo.crpix2) == (150.2, 174.6)
    rec = result.meta.instance["klipprep"]["update_nircam_centers"]
    assert rec["delta_xy"] == pytest.approx([0.177, -0.205])
    assert rec["siaf_ref_xy"] == pytest.approx([150.2, 174.6])
    assert result.meta.cal_step.instance["update_nircam_centers"] == "COMPLETE"


def test_idempotent(cube):
    once = UpdateNircamCentersStep.call(_nrca5(cube))
    twice = UpdateNircamCentersStep.call(once)
    assert twice.meta.wcsinfo.crpix1 == pytest.approx(150.377)
    assert twice.meta.wcsinfo.crpix2 == pytest.approx(174.395)


def test_after_padding_delta_is_added(cube):
    padded = PadFramesStep.call(_nrca5(cube), npix=10)
    result = UpdateNircamCentersStep.call(padded)
    assert result.meta.wcsinfo.crpix1 == pytest.approx(160.377)
    assert result.meta.wcsinfo.crpix2 == pytest.approx(184.395)


def test_sw_aperture_table_differs_from_siaf(cube):
    cube.meta.aperture.name = "NRCA2_MASK335R"
    cube.meta.instrument.filter = "F335M"
    cube.meta.wcsinfo.crpix1, cube.meta.wcsinfo.crpix2 = 159.94, 157.84
    result = UpdateNircamCentersStep.call(cube)
    assert result.meta.wcsinfo.crpix1 == pytest.approx(160.13)
    assert result.meta.wcsinfo.crpix2 == pytest.approx(161.20)


def test_unknown_filter_and_aperture_warn(cube, caplog):
    cube.meta.aperture.name = "NRCA5_MASK335R"
    cube.meta.instrument.filter = "F277W"
    crpix = (cube.meta.wcsinfo.crpix1, cube.meta.wcsinfo.crpix2)
    result = UpdateNircamCentersStep.call(cube)
    assert "filter 'F277W' not in the filter-shift table: zero shift used" in caplog.text
    assert (result.meta.wcsinfo.crpix1, result.meta.wcsinfo.crpix2) == pytest.approx(crpix)


def test_unknown_aperture_correction():
    corr = mask_center_correction("NOPE", "F444W", centers={}, shifts={"F444W": (0.1, 0.2)},
                                  siaf_ref_xy=None)
    assert corr.delta_xy == pytest.approx((0.1, 0.2))
    assert any("unknown to SIAF" in w for w in corr.warnings)


def test_miri_skipped(caplog):
    from conftest import make_model

    model = make_model(instrument="MIRI")
    result = UpdateNircamCentersStep.call(model)
    assert result.meta.cal_step.instance["update_nircam_centers"] == "SKIPPED"
    assert "not NIRCam: skipped" in caplog.text
    assert result.meta.wcsinfo.crpix1 == model.meta.wcsinfo.crpix1



def test_fast_siaf_lookup_matches_pysiaf():
    """The lookup reads pysiaf's XML without importing pysiaf and gives pysiaf's values."""
    import json
    import subprocess
    import sys

    import pysiaf

    siaf = pysiaf.Siaf("NIRCam")
    names = [n for n in siaf.apernames if "MASK" in n or "CORON" in n]
    assert len(names) > 20
    code = ("import json, sys; from jwst_klipprep.reference_data import siaf_reference_xy, "
            "siaf_version; out = {n: siaf_reference_xy('NIRCam', n) for n in json.loads("
            "sys.argv[1])}; print(json.dumps([out, siaf_version(), 'pysiaf' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(names)], capture_output=True,
                          text=True, check=True)
    got, version, imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not imported  # the fast path: ~1 s of CPU less than importing pysiaf
    assert version == pysiaf.JWST_PRD_VERSION
    for name in names:
        ap = siaf[name]
        expected = None if ap.XSciRef is None else [float(ap.XSciRef), float(ap.YSciRef)]
        assert got[name] == expected, name
