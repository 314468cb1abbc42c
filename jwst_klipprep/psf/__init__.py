"""Coronagraphic PSF models: the built-in, data-free optics model (:mod:`.builtin`)."""

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
