import warnings

import numpy as np
import pytest

from jwst_klipprep.algorithms.robust_stats import nanmedian_axis0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nf", [1, 2, 5, 35])
def test_nanmedian_axis0_equals_numpy(dtype, nf):
    rng = np.random.default_rng(nf)
    x = rng.normal(3.0, 2.0, (nf, 17, 23)).astype(dtype)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, :2, :2] = np.nan  # all-NaN columns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(x, axis=0)
    got = nanmedian_axis0(x)
    assert got.dtype == expected.dtype and got.shape == (17, 23)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[:2, :2]).all()
