"""The whole klipprep pipeline on the real frames in ../shared (skipped without them).

NIRCam AU Mic F444W (8 exposures, one median-combined integration each, already recentred and
aligned by an earlier tool: the star at CRPIX) and MIRI HD 106906 F1140C (science and its
references from two programs, with their dedicated backgrounds; science and references already
background-subtracted by the earlier tool).
"""

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from stdatamodels.jwst import datamodels

from jwst_klipprep.batch import associate
from jwst_klipprep.pipeline.klipprep_pipeline import KlipPrepPipeline

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.filterwarnings(
        "ignore:Input association file contains path information:UserWarning"),
]


@pytest.mark.skipif(not (REAL / "nircam_aumic_f444w").is_dir(), reason="no real NIRCam frames")
def test_nircam_aumic_frames_as_given(tmp_path):
    """Frames an earlier tool aligned re-register within 0.025 px (its own check: <= 0.02 px);
    the star, put at CRPIX by that tool, is found within 0.25 px of it (16 mas; the built-in
    model's bias is ~10-15 mas) and ends at the array centre."""
    (group,) = associate([REAL / "nircam_aumic_f444w"], tmp_path / "asn")
    assert group.count("SCI") == 2 and group.count("REF") == 6
    products = KlipPrepPipeline.call(str(group.asn_path), output_dir=str(tmp_path / "out"),
                                     save_results=True)
    assert len(products) == 8
    table = Table.read(next((tmp_path / "out").glob("*_klipprep_summary.ecsv")))
    shifts = np.hypot(table["align_dy"], table["align_dx"])
    assert shifts.max() < 0.025
    for model in products:  # the earlier tool put the star at CRPIX = (151, 175), 1-indexed
        star = model.meta.instance["klipprep"]["recenter_frames"]["star_center_yx"]
        assert np.hypot(star[0] - 174.0, star[1] - 150.0) < 0.25
    for model in products:
        center = ((model.data.shape[-2] - 1) / 2, (model.data.shape[-1] - 1) / 2)
        header = {c[0]: c[1] for c in model.extra_fits.SCI.header}
        assert header["STARCENY"] - 1 == pytest.approx(center[0], abs=1e-6)
        assert header["STARCENX"] - 1 == pytest.approx(center[1], abs=1e-6)
        assert np.isfinite(model.data).all()  # fill_nans: ready for pyKLIP / jwst klip
        with datamodels.open(next((tmp_path / "out").glob(
                model.meta.filename.replace("_calints", "_klipprep")))) as saved:
            assert saved.data.shape == model.data.shape


@pytest.mark.skipif(not (REAL / "miri_hd106906_f1140c").is_dir(), reason="no real MIRI frames")
def test_miri_hd106906_across_programs(tmp_path, caplog):
    """References from program 1194 join the 1277 science with --across-programs; the frames
    that were already background-subtracted are reported; the pipeline completes."""
    folder = REAL / "miri_hd106906_f1140c"
    assert associate([folder], tmp_path / "alone", write=False)[0].count("REF") == 0
    (group,) = associate([folder], tmp_path / "asn", across_programs=True)
    assert [group.count(r) for r in ("SCI", "REF", "SCI_BG", "REF_BG")] == [1, 9, 2, 1]
    caplog.set_level(logging.WARNING)
    products = KlipPrepPipeline.call(str(group.asn_path), save_summary=False,
                                     save_diagnostics=False)
    assert len(products) == 10
    assert "was its background already subtracted" in caplog.text
    shifts = [np.hypot(*np.median(m.meta.instance["klipprep"]["align_frames"]["shift_yx"],
                                  axis=0)) for m in products]
    assert max(shifts) < 0.2  # the nine small-grid dithers are 10 mas (0.09 px) apart
    assert all(m.meta.cal_step.instance["recenter_frames"] == "SKIPPED" for m in products)
