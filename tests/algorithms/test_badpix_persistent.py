"""Tests of the association-wide detector (jwst_klipprep.algorithms.badpix_persistent) and of
the driver's options that go with it, on small groups of coronagraph-like exposures with
detector-fixed defects and sky sources that move between exposures."""

import numpy as np
import pytest
from test_badpix import GAIN, READ, airy, coronagraph

from jwst_klipprep.algorithms import badpix

SIZE, NINTS = 96, 4
STAR = (SIZE // 2, SIZE // 2)


def detector_defects():
    """2-D masks and amplitudes (in ERR) of defects fixed on the detector, >= 25 px from the
    star: isolated hot and cold pixels, a 2x2 and a 3x3 cluster, a 12-px column segment."""
    defects = {}
    for i, (y, x, amp) in enumerate([(10, 12, 15), (80, 20, 40), (15, 75, -20), (85, 85, 300)]):
        m = np.zeros((SIZE, SIZE), bool)
        m[y, x] = True
        defects[f"isolated {i}"] = (m, amp)
    for name, (y, x, side, amp) in {"2x2": (20, 40, 2, 25), "3x3": (70, 60, 3, 60)}.items():
        m = np.zeros((SIZE, SIZE), bool)
        m[y:y + side, x:x + side] = True
        defects[name] = (m, amp)
    m = np.zeros((SIZE, SIZE), bool)
    m[40:52, 8] = True
    defects["column"] = (m, 30)
    return defects


SKY_SOURCES = [  # per exposure: (y, x, peak in ERR), at places of their own
    [(30.3, 80.6, 40.0), (78.2, 40.4, 300.0)],
    [(12.6, 55.1, 60.0), (60.5, 14.7, 25.0)],
    [(84.4, 70.3, 500.0), (25.7, 22.2, 30.0)],
    [(55.2, 85.5, 100.0), (8.3, 35.6, 45.0)],
    [(88.1, 52.8, 35.0), (40.6, 66.4, 80.0)],
    [(64.7, 30.2, 200.0), (18.4, 88.9, 50.0)],
]


def exposure(e, defects, sources, seed=0):
    """(data, err, truth, source image) of exposure ``e``: a coronagraphic star of its own
    aberrations, noise, the detector's defects and its sky sources."""
    rng = np.random.default_rng(seed + e)
    coron, _ = coronagraph(SIZE, seed=10 + e)
    truth = 2e5 * coron + 1.0
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    src = np.zeros((SIZE, SIZE))
    for y, x, peak in sources:
        e0 = np.sqrt(READ**2 + GAIN * 1.0)
        src += peak * e0 * airy(yy, xx, y, x) / airy(np.array(0.0), np.array(0.0), 0, 0)
    truth = np.repeat((truth + src)[None], NINTS, axis=0)
    err = np.sqrt(READ**2 + GAIN * np.maximum(truth, 0))
    data = truth + rng.normal(size=truth.shape) * err
    for m, amp in defects.values():
        data[:, m] += amp * err[:, m]
    return data, err, truth, src


def group(n_exp=6, seed=0):
    defects = detector_defects()
    exps = [exposure(e, defects, SKY_SOURCES[e], seed) for e in range(n_exp)]
    return defects, exps


def source_apertures(sources, radius=3.0):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    m = np.zeros((SIZE, SIZE), bool)
    for y, x, _ in sources:
        m |= np.hypot(yy - y, xx - x) <= radius
    return m


@pytest.fixture(scope="module")
def association():
    return group()


def test_association_finds_detector_defects_and_leaves_sky_sources(association):
    defects, exps = association
    evidence = [badpix.exposure_evidence(d, err=e) for d, e, _, _ in exps]
    res = badpix.find_persistent(evidence)
    assert res.min_votes == 3  # default: 3 of 6
    truth_mask = np.zeros((SIZE, SIZE), bool)
    for name, (m, _) in defects.items():
        assert res.mask[m].all(), name
        truth_mask |= m
    kinds = badpix.KIND_NAMES
    assert {kinds[k] for k in np.unique(res.kind[defects["3x3"][0]])} == {"cluster"}
    assert {kinds[k] for k in np.unique(res.kind[defects["2x2"][0]])} == {"cluster"}
    assert {kinds[k] for k in np.unique(res.kind[defects["column"][0]])} == {"line"}
    assert kinds[int(res.kind[defects["isolated 0"][0]][0])] == "isolated"
    # no sky source pixel, and (away from the star's core) nothing else
    for e in range(len(exps)):
        assert not res.mask[source_apertures(SKY_SOURCES[e])].any()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    far = np.hypot(yy - STAR[0], xx - STAR[1]) > 12
    assert not (res.mask & ~truth_mask & far).any()


def test_driver_repairs_each_exposure_and_keeps_sources(association):
    defects, exps = association
    evidence = [badpix.exposure_evidence(d, err=e) for d, e, _, _ in exps]
    persistent = badpix.find_persistent(evidence)
    truth_mask = np.zeros((SIZE, SIZE), bool)
    for m, _ in defects.values():
        truth_mask |= m
    for e, (data, err, truth, src) in enumerate(exps):
        res = badpix.find_and_repair(data, err=err, find=["persistent", "temporal", "spatial"],
                                     masks={"persistent": persistent.mask})
        assert res.found[:, truth_mask].all()
        assert res.found_by["persistent"] == NINTS * int(persistent.mask.sum())
        m3 = np.broadcast_to(truth_mask, data.shape)
        z = (res.data[m3] - truth[m3]) / err[m3]
        assert np.sqrt(np.mean(z**2)) < 1.5
        aper = np.broadcast_to(source_apertures(SKY_SOURCES[e]), data.shape)
        assert not res.found[aper].any()
        np.testing.assert_array_equal(res.data[aper], data[aper])  # flux unchanged
        flux = src[aper[0]].sum() * NINTS
        assert abs(np.sum(res.data[aper] - data[aper])) <= 0.005 * flux


def test_source_around_one_star_only_is_sky():
    """Something at the same pixels in every exposure of one scene (one target, one roll) is not
    a detector defect, however many exposures see it: a second scene must agree."""
    defects = detector_defects()
    common = (33.4, 62.6, 80.0)
    blob = np.zeros((SIZE, SIZE), bool)  # sharp enough to pass the shape test on its own
    blob[60:62, 30:32] = True
    exps = []
    for e in range(6):
        data, err, truth, src = exposure(e, defects, [common] if e < 4 else [], seed=3)
        if e < 4:
            data[:, blob] += 40 * err[:, blob]
        exps.append((data, err))
    evidence = [badpix.exposure_evidence(d, err=e) for d, e in exps]
    scenes = ["ref star"] * 4 + ["science roll 1", "science roll 2"]
    res = badpix.find_persistent(evidence, scenes=scenes)
    aper = source_apertures([common])
    assert res.votes[aper].max() >= 4  # the four exposures of the reference star saw it
    assert not res.mask[aper].any() and not res.mask[blob].any()
    assert res.mask[defects["3x3"][0]].all() and res.mask[defects["column"][0]].all()
    # without the scenes, four votes make the sharp one a defect: the scenes are what save it
    assert badpix.find_persistent(evidence).mask[blob].all()


def test_per_file_evidence_uses_the_psf_shape():
    """One exposure: clusters and the column are found by their shape, sky sources (Airy cores
    of 25-500 ERR) are left alone."""
    defects, exps = group(n_exp=3, seed=5)
    for e, (data, err, _, _) in enumerate(exps):
        res = badpix.find_persistent([badpix.exposure_evidence(data, err=err)])
        assert res.min_votes == 1
        for name in ("2x2", "3x3", "column", "isolated 1", "isolated 3"):
            assert res.mask[defects[name][0]].all(), (e, name)
        assert not res.mask[source_apertures(SKY_SOURCES[e])].any(), e
        assert res.n_psf_like > 0  # the sources were candidates, and the shape test kept them


def test_votes_threshold_matters(association):
    """A defect present in 2 of 6 exposures only is found with min_votes=2, not with 3."""
    defects, exps = association
    extra = np.zeros((SIZE, SIZE), bool)
    extra[12, 50] = True
    evidence = []
    for e, (d, err, _, _) in enumerate(exps):
        d = d.copy()
        if e < 2:
            d[:, extra] += 50 * err[:, extra]
        evidence.append(badpix.exposure_evidence(d, err=err))
    assert not badpix.find_persistent(evidence).mask[extra].any()
    assert badpix.find_persistent(evidence, min_votes=2).mask[extra].all()


def test_default_min_votes():
    assert [badpix.default_min_votes(n) for n in (1, 2, 3, 5, 6, 8, 16)] == [1, 2, 2, 2, 3, 3, 6]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"evidence": []}, "at least one exposure"),
    ({"min_votes": 7}, r"min_votes must be in \[1, 6\]"),
    ({"scenes": [1, 2]}, "2 scenes for 6 exposures"),
    ({"sigma": -1.0}, "positive"),
])
def test_find_persistent_validation(association, kwargs, match):
    _, exps = association
    evidence = [badpix.exposure_evidence(d, err=e) for d, e, _, _ in exps]
    kwargs = {"evidence": evidence, **kwargs}
    with pytest.raises(ValueError, match=match):
        badpix.find_persistent(kwargs.pop("evidence"), **kwargs)


def test_find_persistent_shape_mismatch(association):
    _, exps = association
    ev = badpix.exposure_evidence(exps[0][0], err=exps[0][1])
    small = badpix.exposure_evidence(exps[0][0][:, :50], err=exps[0][1][:, :50])
    with pytest.raises(ValueError, match="one shape"):
        badpix.find_persistent([ev, small])


def test_evidence_ignores_bad_integrations():
    data = np.ones((5, 12, 12))
    err = np.full_like(data, 0.1)
    bad = np.zeros(data.shape, bool)
    data[0, 3, 3] = 1e6
    bad[0, 3, 3] = True
    ev = badpix.exposure_evidence(data, err=err, bad=bad)
    assert ev.image[3, 3] == 1.0
    np.testing.assert_allclose(ev.noise[3, 3], 0.1 * np.sqrt(np.pi / 2 / 4))
    np.testing.assert_allclose(ev.noise[5, 5], 0.1 * np.sqrt(np.pi / 2 / 5))


def test_driver_dilate_and_masks():
    data = np.random.default_rng(0).normal(size=(3, 20, 20))
    err = np.ones_like(data)
    mask = np.zeros((20, 20), bool)
    mask[10, 10] = True
    res = badpix.find_and_repair(data, err=err, find=["persistent"], masks={"persistent": mask},
                                 dilate=1)
    assert res.found[:, 9:12, 9:12].all() and res.found.sum() == 3 * 9
    assert res.found_by == {"persistent": 3, "dilate": 24}
    assert set(np.unique(res.found_map[:, 9:12, 9:12])) == {1, 2}
    assert res.outliers[:, 9:12, 9:12].all()
    with pytest.raises(ValueError, match="need their mask"):
        badpix.find_and_repair(data, err=err, find=["persistent"])
    with pytest.raises(ValueError, match="dilate must be >= 0"):
        badpix.find_and_repair(data, err=err, find=[], dilate=-1)
