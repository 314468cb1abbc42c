"""Plugin base classes: jwst Steps and Pipelines that never contact CRDS.

Every jwst_klipprep step subclasses :class:`KlipPrepStep` (on ``jwst.stpipe.Step``) and the
pipeline subclasses :class:`KlipPrepPipeline` base :class:`KlipPrepPipelineBase` (on
``jwst.stpipe.Pipeline``).  The mixin here fixes the pitfalls of third-party stpipe plugins
(see ``docs/developer.rst``):

* no CRDS ``pars-*`` lookup (there are none for plugin steps) and no CRDS context query, so the
  steps run offline with no environment variable set;
* the package's own INFO log lines reach ``strun`` output and ``cal_logs``;
* the package's own suffixes are stripped (no ``x_padded_padded.fits``);
* plain FITS files (no ASDF extension) are accepted;
* inputs are opened and validated in one place, with errors that name the file.
"""

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from jwst.datamodels import ModelContainer
from jwst.stpipe import Pipeline as _JwstPipeline
from jwst.stpipe import Step as _JwstStep
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import JwstDataModel

from jwst_klipprep import _io
from jwst_klipprep.integration import ALL_SUFFIXES, STEPS

__all__ = ["CORON_EXP_TYPES", "InputError", "KlipPrepPipelineBase", "KlipPrepStep", "members"]

log = logging.getLogger(__name__)

PACKAGE_LOGGER = "jwst_klipprep"

#: EXP_TYPE values of coronagraphic exposures that the steps accept.
CORON_EXP_TYPES = ("NRC_CORON", "MIR_4QPM", "MIR_LYOT")

#: Model classes the steps accept (stage-2 calints / cal products).
_ACCEPTED_MODELS = (datamodels.CubeModel, datamodels.ImageModel)


class InputError(ValueError):
    """Bad input: the message names the file and what is wrong with it."""


def _name(model_or_path):
    if isinstance(model_or_path, (str, Path)):
        return str(model_or_path)
    name = getattr(getattr(model_or_path, "meta", None), "filename", None)
    return name or f"<in-memory {type(model_or_path).__name__}>"


def members(models):
    """Iterate over the models of a single model or a ModelContainer."""
    if isinstance(models, ModelContainer):
        return list(models)
    return [models]


def check_model(model):
    """Raise `InputError` unless ``model`` is a JWST coronagraphic Cube/ImageModel."""
    name = _name(model)
    if isinstance(model, datamodels.RampModel) or not isinstance(model, _ACCEPTED_MODELS):
        raise InputError(
            f"{name}: is a {type(model).__name__}; jwst_klipprep steps need stage-2 "
            "coronagraphic products (calints CubeModel or cal ImageModel)"
        )
    telescope = model.meta.telescope
    if telescope is not None and str(telescope).upper() != "JWST":
        raise InputError(f"{name}: TELESCOP={telescope!r} is not a JWST file")
    exp_type = model.meta.exposure.type
    if exp_type not in CORON_EXP_TYPES:
        raise InputError(
            f"{name}: EXP_TYPE={exp_type!r} is not coronagraphic "
            f"(expected one of {', '.join(CORON_EXP_TYPES)})"
        )
    ndim = 3 if isinstance(model, datamodels.CubeModel) else 2
    if model.data is None or model.data.ndim != ndim or model.data.size == 0:
        shape = None if model.data is None else model.data.shape
        raise InputError(f"{name}: SCI has shape {shape}, expected a {ndim}-D array")


def check_asn(path):
    """Validate an association file: readable JSON with products and existing members."""
    path = Path(path)
    try:
        asn = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable association (JSON) file: {exc}") from None
    products = asn.get("products") if isinstance(asn, dict) else None
    if not products:
        raise InputError(f"{path}: association has no 'products'")
    for product in products:
        for member in product.get("members", []):
            expname = member.get("expname")
            if not expname:
                raise InputError(f"{path}: a member has no 'expname'")
            member_path = Path(expname)
            if not member_path.is_absolute():
                member_path = path.parent / member_path
            if not member_path.exists():
                raise InputError(
                    f"{path}: member {expname!r} (exptype {member.get('exptype')!r}) "
                    f"not found at {member_path}"
                )
    return asn


def _plain_values(value):
    if isinstance(value, dict):
        return {k: _plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_values(v) for v in value)
    if isinstance(value, str) and type(value) is not str:
        return str(value)
    return value


class _PluginMixin:
    """Behaviour shared by the plugin steps and pipeline."""

    @classmethod
    def get_config_from_reference(cls, dataset, disable=None, crds_observatory=None):
        """No CRDS ``pars-*`` files exist for plugin steps: never query CRDS."""
        return cls._empty_config()

    @classmethod
    def _get_crds_parameters(cls, dataset):
        try:
            return super()._get_crds_parameters(dataset)
        except Exception:  # plain FITS without ASDF, missing file: validated later
            return {}, "jwst"

    @staticmethod
    def get_stpipe_loggers():
        """Configure the package logger together with jwst's."""
        return (PACKAGE_LOGGER, *_JwstStep.get_stpipe_loggers())

    def get_pars(self, full_spec=True):
        """Parameters as plain Python values (strun wraps list items in a str subclass)."""
        return _plain_values(super().get_pars(full_spec))

    def default_suffix(self):
        """The output suffix of this step (see `jwst_klipprep.integration.STEPS`)."""
        for _, alias, suffix, _ in STEPS:
            if alias == self.class_alias:
                return suffix
        return super().default_suffix()

    def remove_suffix(self, name):
        """Strip the package's own suffixes as well as jwst's."""
        for suffix in ALL_SUFFIXES:
            if name.endswith("_" + suffix):
                return name[: -len(suffix) - 1], "_"
        return super().remove_suffix(name)

    def open_input(self, step_input):
        """Open and validate the input; return a model or a ModelContainer.

        Paths are checked before opening (missing file, bad association), every model is checked
        (`check_model`), and in-memory inputs are copied when the step runs standalone, so the
        caller's models are never modified.
        """
        if isinstance(step_input, (str, Path)):
            path = Path(step_input)
            if not path.exists():
                raise InputError(f"{path}: file not found")
            if path.suffix.lower() == ".json":
                check_asn(path)
            try:
                models = self.prepare_output(str(path))
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"{path}: cannot be opened as a JWST datamodel: {exc}") from None
        else:
            models = self.prepare_output(step_input)
        for model in members(models):
            check_model(model)
        if isinstance(models, ModelContainer):
            # Save each product under its own name, not step_<Class>_<i>.
            self.output_use_model = True
        return models

    # ---- Output paths and atomic saving (owner: jwst_klipprep._io; keep this block last) ----
    # Every product is written under a temporary name and renamed when complete; an output
    # never replaces an input (refused before processing); --output_dir naming a file is refused;
    # a product that replaces a file this process did not write is reported with a warning.

    def run(self, *args):
        """Refuse an ``--output_dir`` that is a file before anything runs, then run the step."""
        try:
            _io.check_output_dir(self.output_dir)
        except _io.OutputPathError as exc:
            raise InputError(str(exc)) from None
        return super().run(*args)

    def prepare_output(self, init, *args, **kwargs):
        """Open the input (stpipe), remember the input paths and refuse outputs onto them."""
        models = super().prepare_output(init, *args, **kwargs)
        if isinstance(init, (str, Path)):
            self._klipprep_inputs = _io.input_paths(init, models)
            if self.save_results or self.output_file:
                container = isinstance(models, ModelContainer)
                outputs = [self._klipprep_output_path(m, use_model=container)
                           for m in members(models)]
                try:
                    _io.check_output_paths(outputs, self._klipprep_inputs)
                except _io.OutputPathError as exc:
                    raise InputError(str(exc)) from None
        return models

    def _klipprep_output_path(self, model, *, suffix=None, idx=None, output_file=None,
                              use_model=False, **components):
        if output_file is None or output_file == "":
            output_file = self.output_file
        if use_model or self.output_use_model or (output_file is None
                                                   and not self.search_output_file):
            output_file = model.meta.filename
            idx = None
        return self.make_output_path(basepath=output_file, suffix=suffix, idx=idx, **components)

    def save_model(self, model, suffix=None, idx=None, output_file=None, force=False,
                   **components):
        """Save like stpipe, but atomically (`jwst_klipprep._io.save_model_atomic`)."""
        if isinstance(model, Sequence) or not hasattr(model, "to_fits"):
            return super().save_model(model, suffix=suffix, idx=idx, output_file=output_file,
                                      force=force, **components)
        if not force and not self.save_results and not (output_file or self.output_file):
            return None
        path = self._klipprep_output_path(model, suffix=suffix, idx=idx,
                                          output_file=output_file, **components)
        try:
            _io.check_output_paths([path], getattr(self, "_klipprep_inputs", ()))
        except _io.OutputPathError as exc:
            raise InputError(str(exc)) from None
        _io.warn_if_replacing(path)
        output_path = _io.save_model_atomic(model, path)
        log.info("Saved model in %s", output_path)
        return output_path


class KlipPrepStep(_PluginMixin, _JwstStep):
    """Base class of the jwst_klipprep steps.

    Subclasses either implement ``process_model(model)`` (called on each member, modifying the
    step's own copy) or override ``process``.
    """

    def process(self, step_input):
        """Open and validate the input, then run ``process_model`` on each member."""
        models = self.open_input(step_input)
        for model in members(models):
            self.process_model(model)
        return models

    def process_model(self, model):
        """Process one model in place (the step's own copy)."""
        raise NotImplementedError


class KlipPrepPipelineBase(_PluginMixin, _JwstPipeline):
    """Base class of the jwst_klipprep pipeline: no CRDS context query at the end."""

    def finalize_result(self, result, _reference_files_used):
        """Store the pipeline log in ``cal_logs`` without asking CRDS for its context."""
        if isinstance(result, JwstDataModel) and self.class_alias:
            if not hasattr(result, "cal_logs"):
                result.cal_logs = {}
            setattr(result.cal_logs, self.class_alias, self._log_records)
