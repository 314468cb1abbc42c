"""Algorithms of coadd_frames, crop_frames and blur_frames against known truths."""

import numpy as np
import pytest

from jwst_klipprep.algorithms.background import median_error_factor
from jwst_klipprep.algorithms.blur import FWHM_PER_SIGMA, auto_fwhm, blur_frames
from jwst_klipprep.algorithms.coadd import block_slices, coadd_frames
from jwst_klipprep.algorithms.cropping import crop_frames, parse_crop


def test_block_slices_keep_the_partial_block():
    assert block_slices(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert block_slices(6, 3) == [slice(0, 3), slice(3, 6)]
    assert block_slices(2, 5) == [slice(0, 2)]
    with pytest.raises(ValueError, match="nframes"):
        block_slices(4, 0)


def test_coadd_consecutive_blocks_mean_and_median():
    nints = 7
    data = np.arange(nints, dtype=float)[:, None, None] * np.ones((nints, 2, 3))
    err = np.full(data.shape, 2.0)
    mean = coadd_frames(data, nframes=3, method="mean", err=err)
    np.testing.assert_allclose(mean.data[:, 0, 0], [1.0, 4.0, 6.0])  # consecutive, not interleaved
    np.testing.assert_allclose(mean.err[:, 0, 0], [2 / np.sqrt(3), 2 / np.sqrt(3), 2.0])
    median = coadd_frames(data, nframes=3, err=err)
    np.testing.assert_allclose(median.data[:, 0, 0], [1.0, 4.0, 6.0])
    f3 = median_error_factor(3)
    np.testing.assert_allclose(median.err[:, 0, 0], [f3 * 2 / np.sqrt(3)] * 2 + [2.0], rtol=1e-6)


def test_coadd_excludes_bad_values_and_flags_empty_pixels():
    data = np.ones((4, 2, 2))
    data[0, 0, 0] = 1000.0
    dq = np.zeros(data.shape, np.uint32)
    dq[0, 0, 0] = 1 | 4
    dq[1, 0, 0] = 4  # JUMP_DET on a used value: kept
    bad = (dq & 1) != 0
    data[:, 1, 1] = np.nan
    dq[:, 1, 1] = 512
    var = {"var_rnoise": np.full(data.shape, 4.0)}
    out = coadd_frames(data, nframes=4, method="mean", err=np.full(data.shape, 2.0), var=var,
                       dq=dq, bad=bad)
    assert out.data[0, 0, 0] == 1.0 and out.nused[0, 0, 0] == 3
    assert out.dq[0, 0, 0] == 4
    assert np.isnan(out.data[0, 1, 1]) and out.dq[0, 1, 1] == 512 | 1
    np.testing.assert_allclose(out.var["var_rnoise"][0, 0, 0], 4.0 / 3)
    np.testing.assert_allclose(out.err[0, 0, 0] ** 2, out.var["var_rnoise"][0, 0, 0])


def test_coadd_median_error_is_calibrated():
    """Monte Carlo: the scatter of the coadded median matches the propagated ERR."""
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1.5, (5, 200, 200))
    out = coadd_frames(data, nframes=5, err=np.full(data.shape, 1.5))
    assert np.std(out.data) == pytest.approx(np.median(out.err), rel=0.03)


def test_coadd_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown coadd method"):
        coadd_frames(np.ones((2, 2, 2)), nframes=1, method="sum")
    with pytest.raises(ValueError, match="err has shape"):
        coadd_frames(np.ones((2, 2, 2)), nframes=1, err=np.ones((2, 2)))


def test_crop():
    array = np.arange(5 * 6).reshape(5, 6)
    crop = parse_crop([1, 0, 2, 1], array.shape)  # a 0 keeps that side (not an empty array)
    np.testing.assert_array_equal(crop_frames(array, crop), array[2:4, 1:6])
    with pytest.raises(ValueError, match="leaves no pixel"):
        parse_crop([3, 3, 0, 0], array.shape)
    with pytest.raises(ValueError, match=">= 0"):
        parse_crop(-1, array.shape)


def test_blur_conserves_flux_and_gives_the_fwhm():
    ny = nx = 65
    data = np.zeros((1, ny, nx))
    data[0, 32, 32] = 100.0
    out = blur_frames(data, fwhm=3.0)
    assert out.data.sum() == pytest.approx(100.0, rel=1e-6)
    profile = out.data[0, 32]
    x = np.arange(nx) - 32
    sigma = np.sqrt((profile * x**2).sum() / profile.sum())
    assert sigma * FWHM_PER_SIGMA == pytest.approx(3.0, rel=1e-3)


def test_blur_variance_through_the_squared_kernel():
    rng = np.random.default_rng(1)
    data = rng.normal(0, 2.0, (4, 128, 128))
    var = {"var_rnoise": np.full(data.shape, 4.0)}
    out = blur_frames(data, fwhm=2.5, err=np.full(data.shape, 2.0), var=var)
    inner = out.data[:, 10:-10, 10:-10]
    assert np.std(inner) == pytest.approx(np.median(out.err[:, 10:-10, 10:-10]), rel=0.03)
    np.testing.assert_allclose(out.err**2, out.var["var_rnoise"], rtol=1e-5)


def test_blur_nan_aware():
    data = np.ones((1, 20, 20))
    data[0, 5, 5] = np.nan
    data[0, 10, 10] = 50.0
    bad = np.zeros(data.shape, bool)
    bad[0, 10, 10] = True  # a flagged value is neither used nor changed
    out = blur_frames(data, fwhm=2.0, bad=bad)
    assert np.isnan(out.data[0, 5, 5])  # NaN does not spread
    assert np.isnan(out.data).sum() == 1
    assert out.data[0, 10, 10] == 50.0
    np.testing.assert_allclose(out.data[0, 8:13, 3:8], 1.0)  # no dip next to the hole
    with pytest.raises(ValueError, match="fwhm"):
        blur_frames(data, fwhm=0.0)


def test_auto_fwhm():
    # lambda_min/D = 1.5 px -> sqrt(2**2 - 1.5**2)
    scale = 1.0e-6 / 6.5 * 206264.80624709636 / 1.5
    assert auto_fwhm(wavelength_min_um=1.0, diameter_m=6.5, pixel_scale_arcsec=scale) == \
        pytest.approx(np.sqrt(4 - 2.25))
    assert auto_fwhm(wavelength_min_um=4.0, diameter_m=6.5, pixel_scale_arcsec=scale) == 0.0
