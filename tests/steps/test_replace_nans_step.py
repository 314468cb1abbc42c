import numpy as np
import pytest
from helpers import assert_unchanged, snapshot
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

from jwst_klipprep.steps.replace_nans_step import ReplaceNansStep

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
OUTLIER = dqflags.pixel["OUTLIER"]


def test_replaces_flags_and_records(any_model):
    before = snapshot(any_model)
    nan_sci = np.isnan(before["data"])
    nan_err = np.isnan(before["err"])
    result = ReplaceNansStep.call(any_model, fill_value=-3.5)

    assert_unchanged(any_model, before)
    assert type(result) is type(any_model)
    assert result.data.shape == before["data"].shape
    assert np.all(np.isfinite(result.data))
    np.testing.assert_array_equal(result.data[nan_sci], -3.5)
    np.testing.assert_array_equal(result.data[~nan_sci], before["data"][~nan_sci])
    # replaced pixels flagged, and finite SCI pixels whose ERR was NaN; every other bit kept
    flagged = nan_sci | nan_err
    assert nan_err[~nan_sci].sum() == 1  # make_model: ERR NaN at (0, 7, 8), SCI finite
    assert np.all(result.dq[flagged] & DO_NOT_USE)
    np.testing.assert_array_equal(result.dq[~flagged], before["dq"][~flagged])
    # ERR NaN -> err_fill_value (0), the rest untouched
    np.testing.assert_array_equal(result.err[nan_err], 0.0)
    np.testing.assert_array_equal(result.err[~nan_err], before["err"][~nan_err])
    assert result.meta.cal_step.instance["replace_nans"] == "COMPLETE"
    rec = result.meta.instance["klipprep"]["replace_nans"]
    assert rec["n_replaced"] == int(nan_sci.sum())
    assert rec["fill_value"] == -3.5
    assert rec["n_flagged_for_err"] == 1


def test_custom_flags_and_counts_per_integration(cube):
    result = ReplaceNansStep.call(cube, dq_flags="DO_NOT_USE,OUTLIER")
    rec = result.meta.instance["klipprep"]["replace_nans"]
    # make_model puts a NaN at (2,3) in every integration and one more at (5,6) in int 1
    assert rec["n_replaced_per_integration"] == [1, 2, 1]
    assert result.dq[1, 5, 6] == DO_NOT_USE | OUTLIER


def test_var_arrays_consistent(cube):
    cube.var_poisson[0, 4, 4] = np.nan
    result = ReplaceNansStep.call(cube)
    assert result.var_poisson[0, 4, 4] == 0.0
    assert result.var_poisson.shape == result.data.shape
    assert result.meta.instance["klipprep"]["replace_nans"]["n_replaced_err_var"] == 5


def test_unknown_flag_is_an_error(cube):
    with pytest.raises(ValueError, match="unknown DQ flag 'NOT_A_FLAG'"):
        ReplaceNansStep.call(cube, dq_flags="NOT_A_FLAG")


def test_saved_file_roundtrip(cube, tmp_path):
    cube.save(tmp_path / "jw01_calints.fits")
    ReplaceNansStep.call(str(tmp_path / "jw01_calints.fits"), save_results=True,
                         output_dir=str(tmp_path))
    out = tmp_path / "jw01_nanrep.fits"
    assert out.exists()
    with datamodels.open(out) as model:
        assert model.meta.cal_step.instance["replace_nans"] == "COMPLETE"
        assert model.meta.instance["klipprep"]["replace_nans"]["n_replaced"] == 4
        assert np.all(np.isfinite(model.data))
    # running again on the product does not chain suffixes (into another folder: an output
    # never replaces its input, see tests/test_atomic_output.py)
    again = tmp_path / "again"
    ReplaceNansStep.call(str(out), save_results=True, output_dir=str(again))
    assert not (again / "jw01_nanrep_nanrep.fits").exists()
    assert (again / "jw01_nanrep.fits").exists()
