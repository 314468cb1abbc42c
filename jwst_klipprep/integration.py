"""Entry point for stpipe: the steps this package provides.

``stpipe`` calls :func:`get_steps` on every ``strun`` / ``stpipe list``, so this module imports
nothing heavy.  The aliases here are the only way an alias becomes resolvable by ``strun``;
``tests/test_plugin.py`` checks that they match each class's ``class_alias``.
"""

__all__ = ["ALL_SUFFIXES", "STEPS", "get_steps"]

#: (fully qualified class name, alias == cal_step key, output suffix, is_pipeline)
STEPS = (
    ("jwst_klipprep.steps.subtract_background_step.SubtractBackgroundStep",
     "subtract_background", "bkgsub", False),
    ("jwst_klipprep.steps.subtract_median_step.SubtractMedianStep", "subtract_median", "medsub",
     False),
    ("jwst_klipprep.steps.fix_bad_pixels_step.FixBadPixelsStep", "fix_bad_pixels", "bpfix", False),
    ("jwst_klipprep.steps.replace_nans_step.ReplaceNansStep", "replace_nans", "nanrep", False),
    ("jwst_klipprep.steps.update_nircam_centers_step.UpdateNircamCentersStep",
     "update_nircam_centers", "nrccen", False),
    ("jwst_klipprep.steps.recenter_frames_step.RecenterFramesStep", "recenter_frames",
     "recentered", False),
    ("jwst_klipprep.steps.align_frames_step.AlignFramesStep", "align_frames", "aligned", False),
    ("jwst_klipprep.steps.pad_frames_step.PadFramesStep", "pad_frames", "padded", False),
    ("jwst_klipprep.steps.crop_frames_step.CropFramesStep", "crop_frames", "cropped", False),
    ("jwst_klipprep.steps.coadd_frames_step.CoaddFramesStep", "coadd_frames", "coadded", False),
    ("jwst_klipprep.steps.blur_frames_step.BlurFramesStep", "blur_frames", "blurred", False),
    ("jwst_klipprep.pipeline.klipprep_pipeline.KlipPrepPipeline", "klipprep", "klipprep", True),
)

#: Suffixes the package writes; stripped from input names so they never chain.
ALL_SUFFIXES = tuple(s[2] for s in STEPS) + tuple(s[1] for s in STEPS) + tuple(
    s[0].rsplit(".", 1)[1].lower() for s in STEPS
)


def get_steps():
    """Return the ``(class name, alias, is_pipeline)`` tuples for the stpipe entry point."""
    return [(name, alias, is_pipeline) for name, alias, _, is_pipeline in STEPS]
