"""Simulator detector: defects, flat, glowstick background, flux for a peak S/N."""

from __future__ import annotations

import logging
import math

import numpy as np

from ._setups import (
    _DEAD,
    _DNU,
    _HOT,
    _NON_SCIENCE,
    _OTHER_BAD,
    _REFPIX,
    _WARM,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Detector model
# ------------------------------------------------------------------------------------------------


def _free_pixels(rng, n, shape, forbidden, exclude_centers=(), exclude_radius=0.0):
    """``n`` distinct random (y, x) pixels not in ``forbidden`` and not near ``exclude_centers``."""
    ny, nx = shape
    out = []
    taken = set(forbidden)
    while len(out) < n:
        y = int(rng.integers(0, ny))
        x = int(rng.integers(0, nx))
        if (y, x) in taken:
            continue
        if any(math.hypot(y - cy, x - cx) < exclude_radius for cy, cx in exclude_centers):
            continue
        taken.add((y, x))
        out.append((y, x))
    return out


def _detector_defects(rng, shape, mask_center_yx, keep_clear, instrument):
    """Detector-fixed defects, the same in every exposure.

    Returns
    -------
    dict
        ``truth`` (lists for truth.json), ``flags`` (uint32 DQ map, shape ``shape``), ``bad``
        (bool map of DO_NOT_USE pixels) and ``taken`` (set of flagged (y, x) pixels).
    """
    ny, nx = shape
    cy, cx = mask_center_yx
    clear = [tuple(mask_center_yx)] + [tuple(p) for p in keep_clear]
    flags = np.zeros(shape, dtype=np.uint32)
    bad = np.zeros(shape, dtype=bool)
    taken = set()

    def claim(pixels, flag):
        for y, x in pixels:
            flags[y, x] |= flag
            bad[y, x] = True
            taken.add((y, x))

    # bad column away from the star and the companion
    while True:
        col = int(rng.integers(8, nx - 8))
        if abs(col - cx) > 30 and all(abs(col - p[1]) > 4 for p in clear[1:]):
            break
    claim([(y, col) for y in range(ny)], _DNU | _OTHER_BAD)
    # clusters: one 3x3 in the bright halo of the star (12-25 px), the others anywhere clear
    clusters = []
    for size, near in ((3, True), (2, False), (2, False), (3, False)):
        while True:
            if near:
                r = rng.uniform(12, 25)
                phi = rng.uniform(0, 2 * math.pi)
                y0 = int(round(cy + r * math.sin(phi))) - 1
                x0 = int(round(cx + r * math.cos(phi))) - 1
            else:
                y0 = int(rng.integers(2, ny - size - 2))
                x0 = int(rng.integers(2, nx - size - 2))
            block = [(y0 + i, x0 + j) for i in range(size) for j in range(size)]
            if any(p in taken for p in block):
                continue
            if any(
                math.hypot(y - py, x - px) < (6 if k == 0 else 4)
                for y, x in block
                for k, (py, px) in enumerate(clear)
            ):
                continue
            break
        claim(block, _DNU | (_HOT if size == 2 else _DEAD))
        clusters.append([y0, x0, size])
    hot = _free_pixels(rng, 20, shape, taken, clear, 4.0)
    claim(hot, _DNU | _HOT)
    dead = _free_pixels(rng, 10, shape, taken, clear, 4.0)
    claim(dead, _DNU | _DEAD)
    # frame-edge pixels: MIRI reference-pixel columns, NIRCam a short NON_SCIENCE run
    non_science = []
    refcols = []
    if instrument == "MIRI":
        refcols = [0, 1, 2, 3]
        for c in refcols:
            flags[:, c] |= _DNU | _REFPIX
            bad[:, c] = True
            taken.update((y, c) for y in range(ny))
    else:
        non_science = [(ny - 1, x) for x in range(nx - 12, nx)]
        claim(non_science, _DNU | _NON_SCIENCE)
    warm = _free_pixels(rng, 15, shape, taken, clear, 4.0)
    for y, x in warm:
        flags[y, x] |= _WARM
    truth = {
        "hot": [list(p) for p in hot],
        "dead": [list(p) for p in dead],
        "clusters": clusters,
        "bad_column": col,
        "non_science": [list(p) for p in non_science],
        "reference_pixel_columns": refcols,
        "warm": [list(p) for p in warm],
    }
    return {"truth": truth, "flags": flags, "bad": bad, "taken": taken}


def _glowstick(shape, mask_center_yx, rotation_deg, amplitude, width_px=2.0):
    """Multiplicative background pattern 1 + amplitude * ridge along the vertical 4QPM line."""
    if amplitude == 0:
        return np.ones(shape)
    ny, nx = shape
    y = (np.arange(ny) - mask_center_yx[0])[:, None]
    x = (np.arange(nx) - mask_center_yx[1])[None, :]
    rot = math.radians(rotation_deg)
    u = x * math.cos(rot) + y * math.sin(rot)  # distance from the (rotated) vertical line
    return 1.0 + amplitude * np.exp(-(u**2) / (2 * width_px**2))


def _flux_for_peak_snr(peak_psf, snr, gain, read_noise, pedestal):
    """Star flux scale giving ``snr`` at the occulted peak: S / sqrt(S/g + rn^2 + ped/g) = snr."""
    b = snr**2 / gain
    c = snr**2 * (read_noise**2 + pedestal / gain)
    s_peak = 0.5 * (b + math.sqrt(b * b + 4 * c))
    return s_peak / peak_psf
