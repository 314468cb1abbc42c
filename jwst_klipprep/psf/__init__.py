"""Coronagraphic PSF models.

:mod:`.instruments` (filter, occulter and pixel-scale tables, name resolution), :mod:`.builtin`
(the data-free optics), :mod:`.models` (the one place where the backend is chosen: builtin,
stpsf, file), :mod:`.opd` (telescope wavefront files), :mod:`.stamps` (model callables for the
fit).
"""

from .builtin import (
    BACKEND_NAME,
    CORONAGRAPHS,
    FIDELITY_NOTE,
    FILTERS,
    coronagraphic_psf,
    default_pixel_scale,
    mask_transmission,
    resolve_coronagraph,
    resolve_filter,
)

__all__ = [
    "BACKEND_NAME",
    "CORONAGRAPHS",
    "FIDELITY_NOTE",
    "FILTERS",
    "coronagraphic_psf",
    "default_pixel_scale",
    "mask_transmission",
    "resolve_coronagraph",
    "resolve_filter",
]
