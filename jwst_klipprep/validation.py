"""Up-front validation shared by every step: associations, input data, parameters.

Everything a step can check before it computes anything is checked here, once, with a message
that names the file (or the association member, or the parameter) and says what to do.  The two
exception classes are ``ValueError`` subclasses (so ``except ValueError`` keeps working in
Python) and also stpipe ``StpipeExitException``, which ``strun`` turns into a short message and
exit status 1 instead of a traceback (``strun --debug`` opens the debugger on it; the traceback is
also in the log at DEBUG level).
"""

import logging
from pathlib import Path

import numpy as np
from stpipe.exceptions import StpipeExitException

__all__ = [
    "ABSURD_VALUE",
    "ASN_EXPTYPES",
    "FILE_PARAMETERS",
    "InputError",
    "ParameterError",
    "check_asn_structure",
    "check_data",
    "check_same_setup",
    "check_spec_values",
    "dead_integrations",
    "invalid_err",
    "string_parameters",
]

log = logging.getLogger(__name__)

#: ASN member exptypes the steps understand (case-insensitive).
ASN_EXPTYPES = ("science", "psf", "background")

#: Largest |SCI| or ERR value accepted as physical (MJy/sr or DN/s): beyond it the file is
#: corrupt or scaled by mistake, and the fits of the steps would lose all precision.
ABSURD_VALUE = 1e20


class InputError(ValueError, StpipeExitException):
    """Bad input: the message names the file and what is wrong with it.

    Under ``strun`` the message is printed without a traceback (exit status 1).
    """

    def __init__(self, message, exit_status=1):
        ValueError.__init__(self, message)
        self._exit_status = exit_status

    def __str__(self):
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return type(self), (str(self), self._exit_status)


class ParameterError(InputError):
    """Bad step parameter: the message names the step, the parameter and the accepted values."""


# --------------------------------------------------------------------------------------------
# Associations


def check_asn_structure(asn, path):
    """Check the structure of a loaded association; return the member paths it lists.

    Parameters
    ----------
    asn : object
        The parsed JSON.
    path : Path
        The association file (named in messages; relative ``expname`` are resolved from its
        folder).

    Returns
    -------
    list of (Path, str)
        Resolved member path and exptype, in order.

    Raises
    ------
    InputError
        No products, products not a list of objects, an empty or missing member list, a member
        that is not an object with ``expname``, an unknown ``exptype``, a missing member file or
        a member listed twice.
    """
    path = Path(path)
    if not isinstance(asn, dict):
        raise InputError(f"{path}: an association is a JSON object with 'products', "
                         f"got a JSON {type(asn).__name__}")
    products = asn.get("products")
    if not products:
        raise InputError(f"{path}: association has no 'products'")
    if not isinstance(products, list) or not all(isinstance(p, dict) for p in products):
        raise InputError(f"{path}: 'products' must be a list of objects "
                         '([{"name": ..., "members": [...]}]), '
                         f"got {type(products).__name__}")
    found, seen = [], {}
    for i, product in enumerate(products):
        label = f"product {i} ({product.get('name', 'no name')!r})"
        members = product.get("members")
        if not isinstance(members, list) or not members:
            raise InputError(f"{path}: {label} has no members: 'members' must be a non-empty "
                             '[{"expname": ..., "exptype": "science"}, ...] list')
        for j, member in enumerate(members):
            if not isinstance(member, dict):
                raise InputError(
                    f"{path}: {label} member {j} is a {type(member).__name__} ({member!r}); each "
                    'member must be an object such as {"expname": "x_calints.fits", '
                    '"exptype": "science"}')
            expname = member.get("expname")
            if not expname or not isinstance(expname, str):
                raise InputError(f"{path}: {label} member {j} has no 'expname'")
            exptype = member.get("exptype")
            if exptype is None or str(exptype).lower() not in ASN_EXPTYPES:
                raise InputError(
                    f"{path}: member {expname!r} has exptype {exptype!r}; expected one of "
                    f"{', '.join(ASN_EXPTYPES)}")
            member_path = Path(expname)
            if not member_path.is_absolute():
                member_path = path.parent / member_path
            if not member_path.exists():
                raise InputError(f"{path}: member {expname!r} (exptype {exptype!r}) "
                                 f"not found at {member_path}")
            key = member_path.resolve()
            if key in seen:
                roles = (f"as {exptype!r}" if seen[key] == exptype
                         else f"as {seen[key]!r} and as {exptype!r}")
                raise InputError(
                    f"{path}: member {expname!r} is listed twice ({roles}); remove the duplicate "
                    "so that it is processed once")
            seen[key] = exptype
            found.append((member_path, str(exptype).lower()))
    return found


# --------------------------------------------------------------------------------------------
# Data


def invalid_err(data, err, bad):
    """Pixels with a usable SCI value but an ERR that is zero, negative or not finite."""
    usable = np.isfinite(data) & ~bad
    with np.errstate(invalid="ignore"):
        return usable & ~(np.isfinite(err) & (err > 0))


def dead_integrations(data, bad=None):
    """Integrations with no finite, unflagged pixel (all NaN or all flagged).

    Parameters
    ----------
    data : ndarray, shape (nints, ny, nx)
    bad : ndarray of bool, same shape, optional

    Returns
    -------
    ndarray of bool, shape (nints,)
    """
    data = np.asarray(data)
    usable = np.isfinite(data)
    if bad is not None:
        usable &= ~np.asarray(bad, bool)
    return ~usable.reshape(data.shape[0], -1).any(axis=1)


def check_data(name, data, err, dq, *, bad_bits=1, warn=True):
    """Check SCI / ERR of one exposure before any step uses them.

    Raises `InputError` when the arrays cannot be read (a file truncated inside its data), when
    every integration is dead, when SCI or ERR hold absurd values (beyond `ABSURD_VALUE`), or
    when ERR is zero, negative or NaN in every usable pixel (the steps weigh by 1/ERR^2).
    Warns (log) about some dead integrations or some unusable ERR values.

    Returns
    -------
    dict
        ``dead`` (bool per integration) and ``bad_err`` (number of usable pixels whose ERR is
        not usable).
    """
    try:
        data = np.asarray(data)
        err = None if err is None or np.size(err) == 0 else np.asarray(err)
        dq = None if dq is None or np.size(dq) == 0 else np.asarray(dq)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{name}: the data cannot be read (truncated or corrupt file?): "
                         f"{exc}") from None
    cube = data if data.ndim == 3 else data[np.newaxis]
    if err is not None and err.shape != data.shape:
        raise InputError(f"{name}: ERR has shape {err.shape} but SCI has {data.shape}; the file "
                         "is internally inconsistent")
    if dq is not None and (dq.shape[-2:] != data.shape[-2:] or dq.ndim > data.ndim):
        raise InputError(f"{name}: DQ has shape {dq.shape} but SCI has {data.shape}; the file "
                         "is internally inconsistent")
    bad = np.zeros(cube.shape, bool)
    if dq is not None and dq.shape[-2:] == cube.shape[-2:]:
        bad = np.broadcast_to((dq.reshape(-1, *cube.shape[-2:]) & bad_bits) != 0, cube.shape)
    finite = np.isfinite(cube)
    with np.errstate(invalid="ignore", over="ignore"):
        peak = float(np.max(np.abs(cube), where=finite, initial=0.0))
    if peak > ABSURD_VALUE:
        raise InputError(
            f"{name}: SCI holds absurd values (|SCI| up to {peak:.3g}, limit {ABSURD_VALUE:g}); "
            "the file is corrupt or was scaled by mistake: check its units and calibration")
    dead = dead_integrations(cube, bad)
    if dead.all():
        raise InputError(f"{name}: every integration is dead (no finite, unflagged SCI pixel)")
    if dead.any() and warn:
        log.warning("%s: integration(s) %s are dead (all NaN or flagged); the steps skip them",
                    name, np.flatnonzero(dead).tolist())
    n_bad_err = 0
    if err is not None and err.shape == data.shape:
        err3 = err if err.ndim == 3 else err[np.newaxis]
        with np.errstate(invalid="ignore", over="ignore"):
            epeak = float(np.max(np.abs(err3), where=np.isfinite(err3), initial=0.0))
        if epeak > ABSURD_VALUE:
            raise InputError(f"{name}: ERR holds absurd values (up to {epeak:.3g}); the file is "
                             "corrupt or was scaled by mistake")
        wrong = invalid_err(cube, err3, bad)
        n_bad_err = int(wrong.sum())
        n_usable = int((finite & ~bad).sum())
        if n_usable and n_bad_err == n_usable:
            raise InputError(
                f"{name}: ERR is zero, negative or NaN in every usable pixel; the steps weigh "
                "pixels by 1/ERR^2: use a stage-2 product with a valid ERR array")
        if n_bad_err and warn:
            log.warning(
                "%s: ERR is zero, negative or NaN in %d usable pixel(s) (%.3g %%); those pixels "
                "get no weight in the fits", name, n_bad_err, 100.0 * n_bad_err / n_usable)
    return {"dead": dead, "bad_err": n_bad_err}


def check_same_setup(models, reference, *, step, keys=("instrument", "filter")):
    """Raise `InputError` unless every model has the reference's instrument (and filter, ...).

    ``keys`` are ``meta.instrument`` attribute names (``name`` is spelled ``instrument``).
    """
    def values(model):
        inst = model.meta.instrument
        return {k: getattr(inst, "name" if k == "instrument" else k, None) for k in keys}

    want = values(reference)
    for model in models:
        got = values(model)
        diff = [k for k in keys if got[k] is not None and want[k] is not None
                and str(got[k]).upper() != str(want[k]).upper()]
        if diff:
            detail = ", ".join(f"{k.upper()}={got[k]!r} (reference {want[k]!r})" for k in diff)
            raise InputError(
                f"{model.meta.filename}: {detail}: {step} needs every exposure taken with the "
                f"reference {reference.meta.filename}'s setup; remove it from the association")


# --------------------------------------------------------------------------------------------
# Parameters


def _spec_checks(step_class):
    from configobj import validate

    spec = step_class.load_spec_file()
    parse = validate.Validator()._parse_with_caching  # noqa: SLF001 - configobj's own parser
    out = {}
    for key in spec.scalars:
        try:
            fun_name, _, kwargs, _ = parse(spec[key])
        except Exception:  # noqa: BLE001 - stpipe extras such as input_file: nothing to check
            continue
        out[key] = (fun_name, kwargs)
    return out


#: String parameters that name an input file (checked to exist before any step runs).
FILE_PARAMETERS = ("psfmask", "psf_file", "custom_mask")


def string_parameters(step_class):
    """Names of the ``string`` parameters of a step class."""
    return [key for key, (fun_name, _) in _spec_checks(step_class).items()
            if fun_name == "string"]


def check_spec_values(step):
    """Check what configobj does not.

    A float parameter with ``min`` or ``max`` must be finite (NaN passes configobj's range test
    silently, e.g. ``fix_bad_pixels --sigma=nan`` turned detection off); a string parameter
    whose name ends in ``flags`` must be DQ flag names; one in `FILE_PARAMETERS` an existing
    file.  ``None`` is accepted where it is the
    default.
    """
    alias = step.class_alias or type(step).__name__
    for key, (fun_name, kwargs) in _spec_checks(type(step)).items():
        value = getattr(step, key, None)
        if value is None:
            continue
        if fun_name == "string" and key in FILE_PARAMETERS and not Path(str(value)).is_file():
            raise ParameterError(f"{alias}: parameter {key}={value!r}: file not found (paths "
                                 "are relative to the current folder)")
        if fun_name == "string" and key.endswith("flags"):
            from jwst_klipprep.datamodel_arrays import dq_bits

            try:
                dq_bits(value)
            except ValueError as exc:
                raise ParameterError(f"{alias}: parameter {key}={value!r}: {exc}") from None
        if fun_name == "float" and ("min" in kwargs or "max" in kwargs):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # configobj reports type errors itself
            if not np.isfinite(number):
                lo, hi = kwargs.get("min", "-inf"), kwargs.get("max", "inf")
                raise ParameterError(
                    f"{alias}: parameter {key}={value!r} must be a finite number in "
                    f"[{lo}, {hi}]")
