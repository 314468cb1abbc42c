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
* inputs are opened and validated in one place, with errors that name the file, and every
  parameter is validated before any step runs (`jwst_klipprep.validation`); expected errors
  (`InputError`, `ParameterError`) print a short message under ``strun``, not a traceback.
"""

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jwst.datamodels import ModelContainer
from jwst.stpipe import Pipeline as _JwstPipeline
from jwst.stpipe import Step as _JwstStep
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import JwstDataModel
from stpipe.exceptions import ValidationError as _StpipeValidationError
from threadpoolctl import threadpool_limits

from jwst_klipprep import _offline, outputs
from jwst_klipprep.datamodel_arrays import use_native_byte_order
from jwst_klipprep.integration import ALL_SUFFIXES, STEPS
from jwst_klipprep.validation import (
    InputError,
    ParameterError,
    check_asn_structure,
    check_data,
    check_spec_values,
)

__all__ = [
    "CORON_EXP_TYPES", "THREADS_ENV", "InputError", "KlipPrepPipelineBase", "KlipPrepStep",
    "ParameterError", "for_each_member", "members", "worker_threads",
]

log = logging.getLogger(__name__)

_offline.install()  # no online PRD check when pysiaf is imported (by us or by stpsf)

PACKAGE_LOGGER = "jwst_klipprep"

#: EXP_TYPE values of coronagraphic exposures that the steps accept.
CORON_EXP_TYPES = ("NRC_CORON", "MIR_4QPM", "MIR_LYOT")

#: Model classes the steps accept (stage-2 calints / cal products).
_ACCEPTED_MODELS = (datamodels.CubeModel, datamodels.ImageModel)


def _name(model_or_path):
    if isinstance(model_or_path, (str, Path)):
        return str(model_or_path)
    name = getattr(getattr(model_or_path, "meta", None), "filename", None)
    return name or f"<in-memory {type(model_or_path).__name__}>"


def members(models):
    """The models of a single model, a ModelContainer or a list of models, as a list."""
    if isinstance(models, (ModelContainer, list, tuple)):
        return list(models)
    return [models]


#: Environment variable that sets the number of threads of the per-exposure loops (default: one
#: per CPU core this process may use; ``klipprep batch`` sets 1 in its single-threaded workers).
THREADS_ENV = "JWST_KLIPPREP_THREADS"


def worker_threads():
    """Threads for per-exposure work: ``$JWST_KLIPPREP_THREADS``, else the usable CPU cores."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise InputError(f"${THREADS_ENV}={value!r} is not a whole number") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def for_each_member(func, models):
    """Call ``func(model)`` on every member, in threads when there are several.

    For per-exposure work that is independent between exposures and spends its time in numpy
    sorts and reductions or scipy filters, which release the GIL: on 2 cores the exposures of an
    association are processed about 1.7x faster. Exceptions propagate; results are returned in
    member order.
    """
    group = members(models)
    threads = min(worker_threads(), len(group))
    if threads <= 1:
        return [func(model) for model in group]
    # one BLAS thread per worker while they run: BLAS's own threads on top of ours
    # oversubscribe the cores (the built-in PSF's matrix products took 6x longer)
    with (threadpool_limits(limits=1, user_api="blas"),
          ThreadPoolExecutor(max_workers=threads, thread_name_prefix="klipprep") as pool):
        return list(pool.map(func, group))


def check_model(model, *, warn=True, full=True):
    """Raise `InputError` unless ``model`` is a usable JWST coronagraphic Cube/ImageModel.

    Besides the type, telescope, EXP_TYPE and shape, the data themselves are checked
    (`jwst_klipprep.validation.check_data`): readable, not absurd, not all dead, a usable ERR.
    ``warn`` logs the softer findings (dead integrations, some bad ERR values); ``full=False``
    skips the data checks (a pipeline's sub-steps: the pipeline checked its input).
    """
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
    try:
        data = model.data
    except Exception as exc:  # noqa: BLE001 - lazy read of a truncated / corrupt file
        raise InputError(f"{name}: SCI cannot be read (truncated or corrupt file?): "
                         f"{exc}") from None
    if data is None or data.ndim != ndim or data.size == 0:
        shape = None if data is None else data.shape
        raise InputError(f"{name}: SCI has shape {shape}, expected a {ndim}-D array")
    try:
        err, dq = model.err, model.dq
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{name}: ERR/DQ cannot be read (truncated or corrupt file?): "
                         f"{exc}") from None
    if not full:
        return None
    return check_data(name, data, err, dq, warn=warn)


def check_asn(path):
    """Validate an association file: readable JSON, then `check_asn_structure`."""
    path = Path(path)
    try:
        asn = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable association (JSON) file: {exc}") from None
    check_asn_structure(asn, path)
    return asn


def _broken_member(asn_path):
    """The first member of an association that does not open on its own (None if all do)."""
    asn_path = Path(asn_path)
    if asn_path.suffix.lower() != ".json":
        return None
    try:
        asn = json.loads(asn_path.read_text())
        names = [m["expname"] for p in asn["products"] for m in p["members"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name in names:
        member = asn_path.parent / name
        try:
            with datamodels.open(member):
                pass
        except Exception:  # noqa: BLE001 - any failure names the member
            return f"{member} (member of {asn_path.name})"
    return None


def _already_done(model, alias):
    """True when ``meta.cal_step.<alias>`` of ``model`` says COMPLETE."""
    try:
        return model.meta.cal_step.instance.get(alias) == "COMPLETE"
    except AttributeError:
        return False


def _join_string_lists(config, step_class):
    """``--dq_flags=A,B`` arrives from strun as a list; a ``string`` parameter wants "A,B".

    Applied to the step's own section and, for a pipeline, to each ``steps.<name>`` section.
    """
    from jwst_klipprep.validation import string_parameters

    if config is None:
        return
    for key in string_parameters(step_class):
        value = config.get(key)
        if isinstance(value, (list, tuple)):
            config[key] = ",".join(str(v) for v in value)
    steps = config.get("steps") if hasattr(config, "get") else None
    for name, sub_class in getattr(step_class, "step_defs", {}).items():
        if steps is not None and hasattr(steps, "get") and steps.get(name) is not None:
            _join_string_lists(steps[name], sub_class)


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

    # ---- validation (parameters before anything runs; expected errors without traceback) ----

    @classmethod
    def from_config_section(cls, config, parent=None, name=None, config_file=None):
        """Build the step; a parameter of the wrong type or range is a `ParameterError`.

        stpipe's own ``ValidationError`` makes ``strun`` print a traceback; the message is logged
        here (``strun`` shows it) and raised as a `ParameterError`, which ``strun`` reports
        without one.
        """
        _join_string_lists(config, cls)
        try:
            return super().from_config_section(config, parent=parent, name=name,
                                               config_file=config_file)
        except _StpipeValidationError as exc:
            alias = cls.class_alias or cls.__name__
            message = (f"{alias}: {str(exc).rstrip('.')}; see `strun {alias} --help` for the "
                       "accepted values")
            if parent is None:
                log.error("%s", message)
            raise ParameterError(message) from None

    def check_parameters(self):
        """Step-specific parameter checks; override (raise `ParameterError`), call nothing else.

        Runs before the step (and, in the pipeline, before any step) opens its input.
        """

    def validate_parameters(self):
        """Check every parameter: the generic spec rules, then the step's `check_parameters`."""
        check_spec_values(self)
        self.check_parameters()

    def prefetch(self, *args):
        """stpipe calls this just before ``process``: validate the parameters there."""
        self.validate_parameters()
        return super().prefetch(*args)

    def run(self, *args):
        """Run the step after refusing an ``--output_dir`` that is a file.

        An expected error (`InputError`, `ParameterError`) keeps its traceback in the DEBUG log
        only; under ``strun`` it prints one line.
        """
        try:
            try:
                outputs.check_output_dir(self.output_dir)
            except outputs.OutputPathError as exc:
                raise InputError(str(exc)) from None
            return super().run(*args)
        except InputError as exc:
            log.debug("%s: %s", self.class_alias, exc, exc_info=True)
            raise

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
                where = _broken_member(path) or path
                raise InputError(f"{where}: cannot be opened as a JWST datamodel (truncated or "
                                 f"corrupt file?): {exc}") from None
        else:
            if isinstance(step_input, (list, tuple, ModelContainer)) and len(step_input) == 0:
                raise InputError("input: no exposure to process (empty list)")
            models = self.prepare_output(step_input)
        if isinstance(models, ModelContainer) and len(models) == 0:
            where = step_input if isinstance(step_input, (str, Path)) else "input"
            raise InputError(f"{where}: no exposure to process (empty list or association)")
        standalone = self.parent is None
        opened_here = isinstance(step_input, (str, Path))
        for model in members(models):
            if opened_here:  # our own models: never a caller's arrays (see the function)
                use_native_byte_order(model)
            check_model(model, warn=standalone, full=standalone)
            done = [a for a in (self.class_alias, *getattr(self, "step_defs", ()))
                    if standalone and _already_done(model, a)]
            if done:
                log.warning(
                    "%s: was already processed by %s (cal_step COMPLETE): %s runs again on it "
                    "(e.g. padding twice); give it the original stage-2 file if this is not "
                    "intended", _name(model), ", ".join(done), self.class_alias)
        if isinstance(models, ModelContainer):
            # Save each product under its own name, not step_<Class>_<i>.
            self.output_use_model = True
        return models

    # ---- Output paths and atomic saving (owner: jwst_klipprep.outputs; keep this block last) ----
    # Every product is written under a temporary name and renamed when complete; an output
    # never replaces an input (refused before processing); --output_dir naming a file is refused;
    # a product that replaces a file this process did not write is reported with a warning.

    def prepare_output(self, init, *args, **kwargs):
        """Open the input (stpipe), remember the input paths and refuse outputs onto them."""
        models = super().prepare_output(init, *args, **kwargs)
        if isinstance(init, (str, Path)):
            self._klipprep_inputs = outputs.input_paths(init, models)
            if self.save_results or self.output_file:
                container = isinstance(models, ModelContainer)
                paths = [self._klipprep_output_path(m, use_model=container)
                         for m in members(models)]
                try:
                    outputs.check_output_paths(paths, self._klipprep_inputs)
                except outputs.OutputPathError as exc:
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
        """Save like stpipe, but atomically (`jwst_klipprep.outputs.save_model_atomic`)."""
        if isinstance(model, Sequence) or not hasattr(model, "to_fits"):
            return super().save_model(model, suffix=suffix, idx=idx, output_file=output_file,
                                      force=force, **components)
        if not force and not self.save_results and not (output_file or self.output_file):
            return None
        path = self._klipprep_output_path(model, suffix=suffix, idx=idx,
                                          output_file=output_file, **components)
        try:
            outputs.check_output_paths([path], getattr(self, "_klipprep_inputs", ()))
        except outputs.OutputPathError as exc:
            raise InputError(str(exc)) from None
        outputs.warn_if_replacing(path)
        output_path = outputs.save_model_atomic(model, path)
        log.info("Saved model in %s", output_path)
        return output_path


class KlipPrepStep(_PluginMixin, _JwstStep):
    """Base class of the jwst_klipprep steps.

    Subclasses either implement ``process_model(model)`` (called on each member, modifying the
    step's own copy) or override ``process``.  A step whose ``process_model`` touches nothing but
    its model sets ``parallel_members = True``: its members are then processed in threads
    (`for_each_member`).
    """

    #: True when ``process_model`` may run on several members at once (no shared state written).
    parallel_members = False

    def process(self, step_input):
        """Open and validate the input, then run ``process_model`` on each member."""
        models = self.open_input(step_input)
        if self.parallel_members:
            for_each_member(self.process_model, models)
        else:
            for model in members(models):
                self.process_model(model)
        return models

    def process_model(self, model):
        """Process one model in place (the step's own copy)."""
        raise NotImplementedError


class KlipPrepPipelineBase(_PluginMixin, _JwstPipeline):
    """Base class of the jwst_klipprep pipeline: no CRDS context query at the end."""

    def open_input(self, step_input):
        """Open and check the input; an alignment needs a science exposure: refuse up front."""
        models = super().open_input(step_input)
        align = getattr(self, "align_frames", None)
        if align is not None and not align.skip:
            from jwst_klipprep.roles import classify_members

            group = members(models)
            if not any(r.kind == "SCI" for r in classify_members(group)):
                where = step_input if isinstance(step_input, (str, Path)) else ", ".join(
                    _name(m) for m in group)
                raise InputError(
                    f"{where}: no science exposure (ASN exptype 'science'): {self.class_alias} "
                    "aligns every frame to the first science integration; add the science "
                    "members, or skip the alignment with --steps.align_frames.skip=True")
        return models

    def validate_parameters(self):
        """Check the pipeline's parameters and every sub-step's before any step runs."""
        super().validate_parameters()
        for name in getattr(self, "step_defs", {}):
            step = getattr(self, name, None)
            if step is not None and not step.skip and hasattr(step, "validate_parameters"):
                try:
                    step.validate_parameters()
                except ParameterError as exc:
                    raise ParameterError(f"{self.class_alias} --steps.{name}: {exc}") from None

    def finalize_result(self, result, _reference_files_used):
        """Store the pipeline log in ``cal_logs`` without asking CRDS for its context."""
        if isinstance(result, JwstDataModel) and self.class_alias:
            if not hasattr(result, "cal_logs"):
                result.cal_logs = {}
            setattr(result.cal_logs, self.class_alias, self._log_records)
