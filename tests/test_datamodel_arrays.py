"""The datamodel <-> arrays adapter writes results into the model's own buffers."""

import numpy as np
from conftest import make_model
from stdatamodels.jwst import datamodels

from jwst_klipprep.datamodel_arrays import FrameArrays


def test_results_go_into_the_opened_files_buffers(tmp_path):
    """A file opened from disk holds big-endian views of its HDU buffers: replacing them would
    keep the originals alive (one extra copy per array and step); writing into them does not."""
    path = tmp_path / "x_calints.fits"
    make_model(nints=2).save(path)
    with datamodels.open(path) as model:
        before = {k: model.instance[k] for k in ("data", "err", "var_rnoise")}
        assert before["data"].dtype.byteorder == ">"
        arrays = FrameArrays.from_model(model)
        arrays.data = np.asarray(arrays.data, np.float32) + 5.0
        arrays.err = np.full(arrays.shape, 2.0, np.float32)
        arrays.var["var_rnoise"] = np.full(arrays.shape, 4.0, np.float32)
        expected = np.array(arrays.data)
        arrays.to_model(model)
        for key, array in before.items():
            assert model.instance[key] is array  # same buffer, updated in place
        np.testing.assert_array_equal(model.data, expected)
        assert np.all(model.err == 2.0) and np.all(model.var_rnoise == 4.0)


def test_broadcast_dq_is_not_left_read_only():
    """A DQ that was only broadcast (unchanged) stays the model's writeable array."""
    model = make_model(nints=2)
    dq = model.dq
    arrays = FrameArrays.from_model(model)
    arrays.to_model(model)
    assert model.dq is dq and model.dq.flags.writeable
    arrays = FrameArrays.from_model(model)
    new = np.array(arrays.dq)
    new[0, 0, 0] |= 4
    arrays.dq = new
    arrays.to_model(model)
    assert model.dq is dq and model.dq[0, 0, 0] & 4


def test_native_byte_order_in_place(tmp_path):
    """Big-endian file arrays become native views of the same buffer, values unchanged."""
    from jwst_klipprep.datamodel_arrays import use_native_byte_order

    path = tmp_path / "x_calints.fits"
    make_model(nints=2).save(path)
    with datamodels.open(path) as model:
        values = {k: np.array(model.instance[k]) for k in ("data", "err", "var_rnoise")}
        buffers = {k: model.instance[k].__array_interface__["data"][0] for k in values}
        converted = use_native_byte_order(model)
        assert {"data", "err", "var_rnoise"} <= set(converted)
        for key, value in values.items():
            array = model.instance[key]
            assert array.dtype.isnative
            assert array.__array_interface__["data"][0] == buffers[key]  # no copy
            np.testing.assert_array_equal(array, value)
        assert use_native_byte_order(model) == []  # idempotent
        model.save(tmp_path / "y_calints.fits")
    with datamodels.open(tmp_path / "y_calints.fits") as again:
        np.testing.assert_array_equal(again.data, values["data"])
