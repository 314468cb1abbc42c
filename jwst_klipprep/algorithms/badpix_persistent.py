"""Detector defects found with the evidence of every exposure of one detector and subarray.

A detector defect (hot or cold pixel, 2x2 or 3x3 cluster, line segment) sits at the same pixel in
every exposure; a sky source moves between rolls and exists around one star only.  Each exposure
gives its *evidence* (`exposure_evidence`: the median over its integrations and the noise of that
median); `find_persistent` then

1. tests, in each exposure, every pixel against the median of the 16 pixels of its 5x5 ring (a
   2x2 or 3x3 cluster, or a line, leaves the ring median alone), with a noise that includes the
   ring's spread (smooth structure) and the exposure's measured scatter;
2. counts the exposures (votes) in which the pixel stands out, with one sign, and the distinct
   *scenes* (target and roll) among them: a pixel is a candidate when it stands out in at least
   ``min_votes`` exposures and, when the exposures hold two scenes or more, in two scenes;
3. keeps the candidates whose 5x5 patch (the median over the voting exposures) is fitted better
   by a defect shape (1x1, 2x2, 3x3, a row or column segment; plus a plane) than by any point
   source or diffraction ridge of the optics (an Airy core or line-spread function at sub-pixel
   offsets and a few widths, see ``_PSF_WIDTHS``; plus a plane): the PSF-shape test.  With one
   exposure (per-file evidence) the test is what keeps sky sources, speckles and the star out;
   with several scenes it only has to keep out the star-fixed PSF structure, since sky sources
   do not vote twice.

The result is a 2-D map (and a kind per pixel: isolated, cluster, line), to be OR-ed into every
integration of every exposure of the group.  Pure numpy/scipy; nothing is modified in place.
"""

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage, special

from jwst_klipprep.algorithms.badpix_common import (
    MAD_TO_SIGMA,
    VAR_MEDIAN,
    median_sorted,
    prepare,
)

__all__ = [
    "KIND_NAMES",
    "Evidence",
    "PersistentDefects",
    "default_min_votes",
    "exposure_evidence",
    "find_persistent",
]

#: Names of the kinds in `PersistentDefects.kind` (0 = not a defect).
KIND_NAMES = {1: "isolated", 2: "cluster", 3: "line"}

_RING = np.array([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if max(abs(dy), abs(dx)) == 2])
_PATCH = 5  # side of the patch of the shape test


class Evidence(NamedTuple):
    """What one exposure says about each pixel (2-D arrays)."""

    #: Median of the usable integrations (NaN where none).
    image: np.ndarray
    #: 1-sigma noise of that median (NaN where unknown).
    noise: np.ndarray


class PersistentDefects(NamedTuple):
    """Result of `find_persistent` (2-D arrays of the detector frame)."""

    #: True = detector defect.
    mask: np.ndarray
    #: 0 = none, else a key of `KIND_NAMES`.
    kind: np.ndarray
    #: Exposures in which the pixel stood out from its ring (either sign).
    votes: np.ndarray
    #: Votes needed.
    min_votes: int
    #: Candidates (enough votes) that the PSF-shape test kept out.
    n_psf_like: int


def exposure_evidence(data, *, err=None, bad=None):
    """Median image of one exposure over its usable integrations, and the noise of that median.

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
        Not modified.
    err : ndarray, shape (nints, ny, nx), optional
        1-sigma uncertainties.  Without it the noise is estimated later from the scatter of
        the residuals (NaN here).
    bad : ndarray of bool, shape (nints, ny, nx), optional
        Pixels not to use (True).

    Returns
    -------
    Evidence
    """
    data, err, bad, good = prepare(data, err, bad)
    nints = data.shape[0]
    x = np.where(good, data, np.nan).astype(np.float32, copy=False)
    n = good.sum(axis=0)
    if nints == 1:
        image = x[0].astype(np.float64)
    else:
        image = median_sorted(np.sort(x, axis=0), n, 0).astype(np.float64)
    if err is None:
        noise = np.full(image.shape, np.nan)
    else:
        e2 = np.where(good, err, 0).astype(np.float64) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt(e2.sum(axis=0) / n)
            factor = np.sqrt(np.where(n > 1, VAR_MEDIAN, 1.0) / n)
            noise = rms * factor
    image[n == 0] = np.nan
    return Evidence(image, noise)


def default_min_votes(n_exposures):
    """Votes needed by default: 1 of 1, 2 of 2-5, then 3/8 of the exposures (3 of 8)."""
    n = int(n_exposures)
    return 1 if n <= 1 else max(2, math.ceil(0.375 * n))


def _shifted(image, offsets):
    """Stack of ``image`` shifted by each (dy, dx) of ``offsets``, NaN outside the frame."""
    r = int(np.abs(offsets).max())
    ny, nx = image.shape
    padded = np.pad(image, r, constant_values=np.nan)
    return np.stack([padded[r + dy:r + dy + ny, r + dx:r + dx + nx] for dy, dx in offsets])


def _stand_out(ev, spread_factor):
    """(z, usable, noise) of one exposure: z = (pixel - ring median) / noise (+) ring spread.

    The noise is the evidence's, floored at a quarter of its median (ERR of real products can be
    tiny or negative) and scaled up by the robust scatter of z over the frame when that exceeds
    1 (ERR too small, static or correlated noise); without ERR it is that scatter.
    """
    ring = np.sort(_shifted(ev.image, _RING), axis=0)
    n = np.sum(np.isfinite(ring), axis=0)
    med = median_sorted(ring, n, 0)
    # spread of the middle third of the ring (~0.82 sigma wide for Gaussian values): the 5 ring
    # pixels that a 3x3 cluster puts in the ring of its corners do not reach it
    lo = np.take_along_axis(ring, np.maximum(n // 3, 0)[None], 0)[0]
    hi = np.take_along_axis(ring, np.maximum(n - 1 - n // 3, 0)[None], 0)[0]
    spread = (hi - lo) / 0.82
    d = ev.image - med
    has_err = bool(np.isfinite(ev.noise).any())
    if has_err:
        finite_noise = ev.noise[np.isfinite(ev.noise) & (ev.noise > 0)]
        floor = 0.25 * np.median(finite_noise) if finite_noise.size else 1.0
        noise = np.fmax(ev.noise, floor)
    else:
        noise = np.ones_like(d)
    ring_factor = math.sqrt(1.0 + VAR_MEDIAN / 16)
    with np.errstate(invalid="ignore"):
        z = d / np.hypot(noise * ring_factor, spread_factor * spread)
    ok = np.isfinite(z) & (n >= 8)
    sample = z[ok][::3]
    scale = MAD_TO_SIGMA * np.median(np.abs(sample - np.median(sample))) if sample.size else 1.0
    scale = max(scale, 1.0) if has_err else max(scale, 1e-30)
    return z / scale, ok, noise * scale


# ----------------------------------------------------------------------------- shape test
def _airy_1d_profile(r, lam_over_d):
    x = np.pi * np.asarray(r, float) / lam_over_d
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, (2 * special.j1(safe) / safe) ** 2)


def _psf_templates(lam_over_d, oversample=5):
    """Pixel-integrated Airy cores and line-spread functions on the 5x5 patch, flattened."""
    half = _PATCH // 2
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    fine = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
    fy, fx = np.meshgrid(fine, fine, indexing="ij")
    out = []
    offsets = np.arange(-2.0, 2.01, 0.5)

    def binned(img):
        return img.reshape(_PATCH, oversample, _PATCH, oversample).mean(axis=(1, 3)).ravel()

    for oy in offsets:
        for ox in offsets:
            out.append(binned(_airy_1d_profile(np.hypot(fy - oy, fx - ox), lam_over_d)))
    # line-spread functions (diffraction ridges) along rows, columns and both diagonals
    lsf_x = np.linspace(0, 8, 401)
    lsf_y = _line_spread(lsf_x, lam_over_d)
    for o in np.arange(-1.5, 1.51, 0.5):
        for dist in (fy - o, fx - o, (fy - fx) / np.sqrt(2) - o, (fy + fx) / np.sqrt(2) - o):
            out.append(binned(np.interp(np.abs(dist), lsf_x, lsf_y)))
    return np.array(out)


def _line_spread(x, lam_over_d):
    """Line-spread function of a circular pupil, by projecting the Airy pattern (numerically)."""
    t = np.linspace(-8, 8, 801)
    return _airy_1d_profile(np.hypot(x[:, None], t[None, :]), lam_over_d).sum(axis=1)


def _defect_templates():
    """Top hats that contain the patch centre: 1x1, 2x2, 3x3, row and column segments."""
    c = _PATCH // 2
    out = []

    def box(y0, y1, x0, x1):
        t = np.zeros((_PATCH, _PATCH))
        t[y0:y1 + 1, x0:x1 + 1] = 1.0
        out.append(t.ravel())

    box(c, c, c, c)
    for side in (2, 3):
        for y0 in range(c - side + 1, c + 1):
            for x0 in range(c - side + 1, c + 1):
                box(y0, y0 + side - 1, x0, x0 + side - 1)
    for a in range(0, c + 1):
        for b in range(c, _PATCH):
            if b > a:
                box(a, b, c, c)
                box(c, c, a, b)
    return np.array(out)


def _residual_operators(templates):
    """I - H for the design [template, 1, y, x] of each template: RSS = p (I - H) p."""
    half = _PATCH // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    base = np.column_stack([np.ones(_PATCH**2), yy.ravel(), xx.ravel()])
    ops = []
    for t in templates:
        design = np.column_stack([t, base])
        hat = design @ np.linalg.pinv(design)
        ops.append(np.eye(_PATCH**2) - hat)
    return np.array(ops)


_OPS_CACHE = {}


#: lambda/D of the PSF shapes, relative to the nominal (``lam_over_d``, which includes the Lyot
#: stop): 0.75 is about the full aperture's, the sharpest a real source or speckle can be.
#: Measured (``benchmarks/bench_badpix.py --workload association``): adding 0.75 to 1.0 took
#: the false flags within 40 px of the synthetic star from 0.10 % to 0.04 % and the map of the
#: ``klipprep demo`` data (no unflagged defect injected; its log line) from 172 pixels to 36,
#: every recall unchanged; adding 0.6 as well lost one 10-sigma hot pixel of 40 on the real
#: frames (recall 97.5 %), so it is not used.
_PSF_WIDTHS = {"scenes": (0.75, 1.0), "per-file": (0.75, 1.0)}


def _operators(lam_over_d, widths):
    key = (round(float(lam_over_d), 3), tuple(widths))
    if key not in _OPS_CACHE:
        psf = np.concatenate([_psf_templates(w * key[0]) for w in widths])
        _OPS_CACHE[key] = (_residual_operators(psf), _residual_operators(_defect_templates()))
    return _OPS_CACHE[key]


def _min_rss(patches, ops):
    """Smallest residual sum of squares of each patch over the operators."""
    best = np.full(len(patches), np.inf)
    for op in ops:
        best = np.minimum(best, np.einsum("ij,jk,ik->i", patches, op, patches))
    return best


def _shape_test(patches, noise, lam_over_d, margin, widths):
    """True where a defect shape fits the patch better than any PSF shape by ``margin`` in
    chi^2, with the variance the larger of the noise's and the defect fit's residual (so that
    in structure that neither shape fits, the PSF must be worse by a factor)."""
    psf_ops, defect_ops = _operators(lam_over_d, widths)
    rss_psf = _min_rss(patches, psf_ops)
    rss_def = _min_rss(patches, defect_ops)
    var = np.fmax(noise**2, rss_def / (_PATCH**2 - 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rss_psf - rss_def) / var > margin


# ----------------------------------------------------------------------------- driver
def _classify(mask):
    """Kind of every pixel of ``mask`` from its 8-connected component."""
    labels, n = ndimage.label(mask, np.ones((3, 3), bool))
    kind = np.zeros(mask.shape, np.int8)
    if n == 0:
        return kind
    sizes = np.bincount(labels.ravel())
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if sizes[i] == 1:
            k = 1
        elif min(h, w) == 1 and max(h, w) >= 3:
            k = 3
        else:
            k = 2
        kind[sl][labels[sl] == i] = k
    return kind


def find_persistent(
    evidence,
    *,
    scenes=None,
    sigma=5.0,
    neg_sigma=None,
    min_votes=None,
    lam_over_d=2.8,
    spread_factor=0.5,
    shape_margin=None,
):
    """Detector defects from the evidence of every exposure of one detector (see module doc).

    Parameters
    ----------
    evidence : sequence of Evidence
        One per exposure, all of the same 2-D shape (`exposure_evidence`).
    scenes : sequence of hashable, optional
        Scene of each exposure (e.g. target and roll): exposures of one scene see the same sky
        at the same pixels.  Default: every exposure its own scene.
    sigma, neg_sigma : float, optional
        Thresholds (noise sigma of the median image) for standing out hot and cold
        (``neg_sigma`` defaults to ``sigma``).
    min_votes : int, optional
        Exposures in which a pixel must stand out (default `default_min_votes`).
    lam_over_d : float, optional
        lambda/D of the optics in pixels, for the PSF shapes of the shape test.
    spread_factor : float, optional
        Weight of the ring's spread (smooth structure) in the noise of the stand-out test.
    shape_margin : float, optional
        Default 4 when the votes come from two scenes or more (the test then only has to keep
        out star-fixed PSF structure), 25 otherwise (per-file evidence: it must keep out every
        sky source).  A candidate is a defect when its best defect shape (plus a plane) leaves
        a residual smaller than the best PSF shape's by ``shape_margin`` in chi^2, with the
        variance the larger of the noise's and the defect fit's residual per degree of freedom.

    Returns
    -------
    PersistentDefects
    """
    evidence = list(evidence)
    if not evidence:
        raise ValueError("find_persistent needs the evidence of at least one exposure")
    shape = np.shape(evidence[0].image)
    if len(shape) != 2 or any(np.shape(ev.image) != shape or np.shape(ev.noise) != shape
                              for ev in evidence):
        raise ValueError("every exposure's evidence must be 2-D images of one shape")
    n_exp = len(evidence)
    scenes = list(range(n_exp)) if scenes is None else list(scenes)
    if len(scenes) != n_exp:
        raise ValueError(f"{len(scenes)} scenes for {n_exp} exposures")
    neg_sigma = sigma if neg_sigma is None else neg_sigma
    if sigma <= 0 or neg_sigma <= 0:
        raise ValueError("sigma and neg_sigma must be positive")
    min_votes = default_min_votes(n_exp) if min_votes is None else int(min_votes)
    if not 1 <= min_votes <= n_exp:
        raise ValueError(f"min_votes must be in [1, {n_exp}], got {min_votes}")
    scene_ids = np.unique(np.array([hash(s) for s in scenes]), return_inverse=True)[1]
    n_scenes = int(scene_ids.max()) + 1
    hot = np.zeros((n_exp, *shape), bool)
    cold = np.zeros((n_exp, *shape), bool)
    noises = []
    for e, ev in enumerate(evidence):
        z, ok, noise = _stand_out(ev, spread_factor)
        noises.append(noise)
        with np.errstate(invalid="ignore"):
            hot[e] = ok & (z > sigma)
            cold[e] = ok & (z < -neg_sigma)
    need_scenes = min(2, n_scenes)
    if shape_margin is None:
        shape_margin = 4.0 if n_scenes >= 2 else 25.0
    widths = _PSF_WIDTHS["scenes" if n_scenes >= 2 else "per-file"]
    candidates = np.zeros(shape, bool)
    votes = np.zeros(shape, np.int32)
    sign_votes = []
    for votes_by in (hot, cold):
        count = votes_by.sum(axis=0)
        votes += count
        in_scenes = np.zeros(shape, np.int32)
        for s in range(n_scenes):
            in_scenes += votes_by[scene_ids == s].any(axis=0)
        cand = (count >= min_votes) & (in_scenes >= need_scenes)
        candidates |= cand
        sign_votes.append((cand, votes_by))
    mask = np.zeros(shape, bool)
    n_psf_like = 0
    for cand, votes_by in sign_votes:
        cy, cx = np.nonzero(cand & ~mask)
        if cy.size == 0:
            continue
        keep = _test_candidates(evidence, noises, votes_by, cy, cx, lam_over_d, shape_margin,
                                widths)
        mask[cy[keep], cx[keep]] = True
        n_psf_like += int((~keep).sum())
    return PersistentDefects(mask, _classify(mask), votes, min_votes, n_psf_like)


def _test_candidates(evidence, noises, votes_by, cy, cx, lam_over_d, margin, widths):
    """PSF-shape test of candidates on the median patch of their voting exposures."""
    half = _PATCH // 2
    dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
    n_exp = len(evidence)
    patches = np.full((n_exp, cy.size, _PATCH**2), np.nan)
    noise2 = np.full((n_exp, cy.size), np.nan)
    ny, nx = evidence[0].image.shape
    yy = cy[:, None] + dy.ravel()[None, :]
    xx = cx[:, None] + dx.ravel()[None, :]
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    yy, xx = np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)
    for e, ev in enumerate(evidence):
        voted = votes_by[e, cy, cx]
        p = np.where(inside, ev.image[yy, xx], np.nan)
        patches[e, voted] = p[voted]
        noise2[e, voted] = noises[e][cy[voted], cx[voted]] ** 2
    nv = np.sum(np.isfinite(noise2), axis=0)
    srt = np.sort(patches, axis=0)
    patch = median_sorted(srt, np.sum(np.isfinite(srt), axis=0), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = np.sqrt(np.nansum(noise2, axis=0) / np.maximum(nv, 1) ** 2
                        * np.where(nv > 2, VAR_MEDIAN, 1.0))
    # unusable patch pixels (frame edge, known bad) take the patch's median
    fill = np.nanmedian(np.where(np.isfinite(patch), patch, np.nan), axis=1)
    patch = np.where(np.isfinite(patch), patch, fill[:, None])
    if not np.isfinite(noise).any():  # no ERR: the noise is the residual of a plane fit
        noise = np.full(cy.size, np.nan)
    bad_noise = ~np.isfinite(noise) | (noise <= 0)
    if bad_noise.any():
        good_noise = noise[~bad_noise]
        noise[bad_noise] = np.median(good_noise) if good_noise.size else np.nanstd(patch)
    return _shape_test(patch, noise, lam_over_d, margin, widths)

