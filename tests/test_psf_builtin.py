"""Known-answer tests of the built-in, data-free coronagraph optics model."""

import numpy as np
import pytest

from jwst_klipprep.psf import builtin
from jwst_klipprep.psf.builtin import coronagraphic_psf, mask_transmission
from jwst_klipprep.psf.models import MODEL_CACHE, ModelCache, psf_frame

LW = 0.0629


def test_module_constants():
    assert builtin.BACKEND_NAME == "builtin"
    assert "15 mas" in builtin.FIDELITY_NOTE
    for name in (
        "F444W",
        "F335M",
        "F410M",
        "F356W",
        "F250M",
        "F300M",
        "F360M",
        "F430M",
        "F460M",
        "F480M",
        "F1065C",
        "F1140C",
        "F1550C",
    ):
        assert name in builtin.FILTERS
    assert builtin.default_pixel_scale("NIRCAM") == LW
    assert builtin.default_pixel_scale("miri") == 0.11
    assert builtin.default_pixel_scale("NIRCAM", coronagraph="MASKA210R") == 0.0311


def test_zero_offset_is_symmetric_and_centred():
    psf = coronagraphic_psf(shape=(64, 64))
    assert psf.shape == (64, 64) and psf.dtype == np.float64
    peak = psf.max()
    np.testing.assert_allclose(psf, psf[::-1, ::-1], atol=1e-9 * peak)
    np.testing.assert_allclose(psf, psf[:, ::-1], atol=1e-9 * peak)
    # mask centre at ((ny-1)/2, (nx-1)/2): the brightest pixels are the central 2x2
    y, x = np.unravel_index(np.argmax(psf), psf.shape)
    assert y in (31, 32) and x in (31, 32)


def test_odd_shape_centre_pixel():
    psf = coronagraphic_psf(shape=(33, 35), occulted=False)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (16, 17)


def test_unocculted_sums_to_one():
    small = coronagraphic_psf(shape=(64, 64), occulted=False).sum()
    large = coronagraphic_psf(shape=(256, 256), occulted=False).sum()
    assert 0.80 < small < large
    assert 0.975 < large <= 1.0
    miri = coronagraphic_psf(
        instrument="MIRI", filter="F1550C", coronagraph="MASK1550", shape=(256, 256), occulted=False
    ).sum()
    assert 0.96 < miri <= 1.0


def test_pixel_integration_is_normalised():
    """The total does not depend on the detector oversampling (pixel integration)."""
    a = coronagraphic_psf(shape=(128, 128), occulted=False, oversample=1).sum()
    b = coronagraphic_psf(shape=(128, 128), occulted=False, oversample=4).sum()
    assert abs(a - b) < 0.01


def test_mask335r_suppression():
    """Star on the mask centre: peak suppressed ~1000x at F335M; off-axis star barely affected."""
    kw = dict(filter="F335M", shape=(96, 96))
    unocc = coronagraphic_psf(occulted=False, **kw)
    occ = coronagraphic_psf(**kw)
    assert occ.max() / unocc.max() < 2e-3
    # 32 pixels off the mask centre: same pixel phase as the on-axis case
    off = coronagraphic_psf(offset_yx_arcsec=(0.0, 32 * LW), **kw)
    ratio = off.max() / unocc.max()
    assert 0.9 < ratio < 1.02
    # F444W leaks more through MASK335R than F335M but is still suppressed > 100x
    f444 = coronagraphic_psf(shape=(64, 64))
    f444u = coronagraphic_psf(shape=(64, 64), occulted=False)
    assert 1e-3 < f444.max() / f444u.max() < 1e-2


@pytest.mark.parametrize(
    ("instrument", "filt", "mask"),
    [("NIRCAM", "F444W", "MASKA335R"), ("MIRI", "F1140C", "4QPM_1140")],
)
def test_offset_direction(instrument, filt, mask):
    """A star offset towards +x (+y) brightens the +x (+y) side of the occulted image."""
    kw = dict(instrument=instrument, filter=filt, coronagraph=mask, shape=(64, 64), nlambda=1)
    scale = builtin.default_pixel_scale(instrument)
    px = coronagraphic_psf(offset_yx_arcsec=(0.0, 0.5 * scale), **kw)
    assert px[:, 32:].sum() > 1.05 * px[:, :32].sum()
    py = coronagraphic_psf(offset_yx_arcsec=(0.5 * scale, 0.0), **kw)
    assert py[32:, :].sum() > 1.05 * py[:32, :].sum()


def test_unocculted_offset_is_a_pure_shift():
    base = coronagraphic_psf(shape=(48, 48), occulted=False)
    moved = coronagraphic_psf(shape=(48, 48), occulted=False, offset_yx_arcsec=(-LW, 2 * LW))
    np.testing.assert_allclose(moved[:-1, 2:], base[1:, :-2], atol=1e-9 * base.max())


def test_center_yx_moves_the_mask():
    base = coronagraphic_psf(shape=(40, 40), offset_yx_arcsec=(0.01, -0.02))
    moved = coronagraphic_psf(
        shape=(40, 40), offset_yx_arcsec=(0.01, -0.02), center_yx=(19.5 + 3, 19.5 - 5)
    )
    np.testing.assert_allclose(moved[3:, :-5], base[:-3, 5:], atol=1e-9 * base.max())


def test_4qpm_rejects_and_aliases_agree():
    kw = dict(instrument="MIRI", filter="F1140C", shape=(64, 64), nlambda=1)
    occ = coronagraphic_psf(coronagraph="4QPM_1140", **kw)
    unocc = coronagraphic_psf(coronagraph="4QPM_1140", occulted=False, **kw)
    assert unocc.max() / occ.max() > 30
    assert occ.sum() < 0.1 * unocc.sum()
    for alias in ("MASK1140", "FQPM1140", "fqpm1140"):
        np.testing.assert_array_equal(coronagraphic_psf(coronagraph=alias, **kw), occ)
    # a star well inside a quadrant is barely attenuated
    far = coronagraphic_psf(coronagraph="MASK1140", offset_yx_arcsec=(16 * 0.11, 16 * 0.11), **kw)
    assert far.max() / unocc.max() > 0.8


def test_header_spellings_agree():
    a = coronagraphic_psf(coronagraph="MASKA335R", shape=(16, 16))
    b = coronagraphic_psf(coronagraph="MASK335R", shape=(16, 16))
    np.testing.assert_array_equal(a, b)


def test_coronagraphic_psf_returns_fresh_arrays():
    first = coronagraphic_psf(shape=(24, 24), offset_yx_arcsec=(0.003, 0.004))
    first[:] = -1.0
    second = coronagraphic_psf(shape=(24, 24), offset_yx_arcsec=(0.003, 0.004))
    assert second.min() >= 0.0


def test_one_model_cache_keyed_by_the_full_configuration():
    """psf_frame computes a configuration once; any changed argument is a new entry."""
    cache = ModelCache(max_entries=3)
    calls = []

    def compute(v):
        calls.append(v)
        return np.full((2, 2), v)

    a = cache.get(("k", 1), lambda: compute(1.0))
    assert cache.get(("k", 1), lambda: compute(9.0)) is a and calls == [1.0]
    assert not a.flags.writeable and cache.hits == 1 and cache.misses == 1
    for v in (2.0, 3.0, 4.0):
        cache.get(("k", v), lambda v=v: compute(v))
    assert len(cache) == 3 and cache.nbytes == 3 * 32  # LRU: ("k", 1) dropped
    cache.get(("k", 1), lambda: compute(5.0))
    assert calls[-1] == 5.0
    small = ModelCache(max_bytes=40)
    small.get(1, lambda: np.zeros(4))
    small.get(2, lambda: np.zeros(4))
    assert len(small) == 1 and small.nbytes == 32

    kw = dict(instrument="NIRCAM", filter_name="F444W", canonical="MASK335R", shape=(20, 22),
              center_yx=(9.3, 10.6), pixel_scale=0.063, nlambda=1, oversample=1)
    hits, misses = MODEL_CACHE.hits, MODEL_CACHE.misses
    f1 = psf_frame("builtin", offset_yx_arcsec=(0.0021, -0.0013), **kw)
    f2 = psf_frame("builtin", offset_yx_arcsec=(0.0021, -0.0013), **kw)
    assert f2 is f1 and not f1.flags.writeable
    assert (MODEL_CACHE.hits, MODEL_CACHE.misses) == (hits + 1, misses + 1)
    np.testing.assert_array_equal(f1, coronagraphic_psf(
        filter="F444W", coronagraph="MASK335R", shape=(20, 22), center_yx=(9.3, 10.6),
        offset_yx_arcsec=(0.0021, -0.0013), pixel_scale=0.063, nlambda=1, oversample=1))
    f3 = psf_frame("builtin", offset_yx_arcsec=(0.0021, -0.0013),
                   **{**kw, "center_yx": (9.3, 10.7)})
    assert f3 is not f1 and MODEL_CACHE.misses == misses + 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(filter="F999Z"), "F444W"),
        (dict(filter="F1140C"), "valid choices"),
        (dict(instrument="NIRSPEC"), "NIRCAM"),
        (dict(coronagraph="MASKLWB"), "MASKA335R"),
        (dict(instrument="MIRI", filter="F1140C", coronagraph="MASKA335R"), "4QPM_1140"),
        (dict(shape=(0, 10)), "shape"),
        (dict(offset_yx_arcsec=1.0), "offset_yx_arcsec"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        coronagraphic_psf(**kwargs)


def test_mask_transmission_blc():
    t = mask_transmission(
        instrument="NIRCAM", coronagraph="MASKA335R", shape=(101, 121), center_yx=(50.0, 60.0)
    )
    assert t.shape == (101, 121) and t.min() >= 0.0 and t.max() <= 1.0
    assert t[50, 60] < 1e-6
    assert t[0, 0] > 0.99
    # intensity half-width at half-maximum of MASK335R is about 0.64 arcsec (~10.2 LW pixels)
    profile = t[50, 60:]
    hwhm = np.interp(0.5, profile[:30], np.arange(30))
    assert abs(hwhm * LW - 0.64) < 0.03


def test_mask_transmission_4qpm():
    t = mask_transmission(
        instrument="MIRI", coronagraph="4QPM_1140", shape=(224, 288), center_yx=(112.24, 119.75)
    )
    assert t.min() >= 0.0 and t.max() <= 1.0
    # low on the transition lines (about 0.5), about 1 inside the quadrants
    assert t[90:130, 200].min() < 0.55 and t[40, 100:140].min() < 0.55
    assert t[40, 200] > 0.98 and t[180, 40] > 0.98
    # the lines are rotated: 80 rows above the centre the vertical line sits about 6 px to +x
    row = t[192, 100:140]
    assert 100 + np.argmin(row) - 119.75 == pytest.approx(80 * np.tan(np.radians(4.6)), abs=1.0)
