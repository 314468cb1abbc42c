"""The one adapter between jwst datamodels and the arrays the algorithms work on.

* arrays are 3-D ``(nints, ny, nx)``; an ImageModel is one integration ``(1, ny, nx)`` and is
  written back 2-D (`FrameArrays`);
* DQ flags named or given by value are turned into bit masks in one place (`dq_bits`).

Positions (0-indexed ``(y, x)`` inside, 1-indexed FITS keywords outside) are converted in
:mod:`jwst_klipprep.keywords`; moving them with the pixels is :mod:`jwst_klipprep.geometry`;
what a step records is :mod:`jwst_klipprep.provenance`.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

__all__ = ["VAR_NAMES", "FrameArrays", "dq_bits", "model_name"]

log = logging.getLogger(__name__)

#: Variance arrays kept consistent with SCI when present.
VAR_NAMES = ("var_poisson", "var_rnoise", "var_flat")

#: Inconsistent VAR_* arrays already reported (each is dropped by every step that reads it).
_WARNED = set()


def dq_bits(names):
    """Return the integer OR of DQ flags given by name or value (``"DO_NOT_USE,OUTLIER"``,
    ``"1,2048"`` or a list of either)."""
    if names is None:
        return 0
    if isinstance(names, str):
        names = [n for n in names.replace("+", ",").split(",") if n.strip()]
    value = 0
    for name in names:
        key = str(name).strip().upper()
        if key.lstrip("-").isdigit():
            number = int(key)
            if number <= 0 or number & (number - 1) or number >= 2**32:
                raise ValueError(f"DQ flag value {name!r} is not a single flag (a power of 2 "
                                 "below 2**32)")
            value |= number
            continue
        if key not in dqflags.pixel:
            raise ValueError(f"unknown DQ flag {name!r}; valid names are {sorted(dqflags.pixel)}")
        value |= dqflags.pixel[key]
    return value


def model_name(model):
    """The file name of a model, or a description of an in-memory one (for messages)."""
    return model.meta.filename or f"<in-memory {type(model).__name__}>"


def _present(array):
    return array is not None and np.size(array) > 0


@dataclass
class FrameArrays:
    """DATA, ERR, DQ and VAR_* of one exposure as 3-D ``(nints, ny, nx)`` arrays.

    The arrays are views of the model's arrays where possible; algorithms return new arrays and
    the step assigns them here before `to_model`.
    """

    data: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    var: dict = field(default_factory=dict)
    image: bool = False
    dropped: tuple = ()

    @classmethod
    def from_model(cls, model):
        """Read the arrays of a CubeModel or ImageModel, checking their shapes.

        ERR or DQ of a different shape than SCI is an error; a VAR_* array of a different shape
        (seen in real files cropped by other tools) is dropped with a warning, so that the output
        stays internally consistent.
        """
        name = model_name(model)
        image = isinstance(model, datamodels.ImageModel)
        data = np.asarray(model.data)
        if image:
            data = data[np.newaxis]
        shape = data.shape

        def as3d(array):
            array = np.asarray(array)
            return array[np.newaxis] if image and array.ndim == 2 else array

        if _present(model.err):
            err = as3d(model.err)
            if err.shape != shape:
                raise ValueError(f"{name}: ERR has shape {err.shape} but SCI has {shape}")
        else:
            log.warning("%s: no ERR array; using zeros", name)
            err = np.zeros(shape, dtype=np.float32)
        if _present(model.dq):
            dq = as3d(model.dq)
            if dq.shape[-2:] != shape[-2:] or dq.ndim != 3 or dq.shape[0] not in (1, shape[0]):
                raise ValueError(f"{name}: DQ has shape {dq.shape} but SCI has {shape}")
            dq = np.broadcast_to(dq, shape)
        else:
            dq = np.zeros(shape, dtype=np.uint32)
        var, dropped = {}, []
        for var_name in VAR_NAMES:
            array = getattr(model, var_name, None)
            if not _present(array):
                continue
            array = as3d(array)
            if array.shape != shape:
                if (name, var_name, array.shape, shape) not in _WARNED:  # once per file
                    _WARNED.add((name, var_name, array.shape, shape))
                    log.warning(
                        "%s: %s has shape %s but SCI has %s; dropping it from the output "
                        "(the file is internally inconsistent)",
                        name, var_name.upper(), array.shape, shape,
                    )
                dropped.append(var_name)
                continue
            var[var_name] = array
        return cls(data=data, err=err, dq=dq, var=var, image=image, dropped=tuple(dropped))

    @property
    def shape(self):
        """``(nints, ny, nx)``."""
        return self.data.shape

    def to_model(self, model):
        """Write the arrays back (2-D for an ImageModel); drop inconsistent VAR_* arrays."""

        def as_model(array, dtype):
            array = np.asarray(array, dtype=dtype)
            return array[0] if self.image else array

        # Written through ``model.instance``: the dtypes and shapes are fixed here, and the
        # datamodel's per-assignment schema validation cost ~70 ms per exposure (the whole
        # tree is validated again when the product is saved).
        arrays = {"data": (self.data, np.float32), "err": (self.err, np.float32),
                  "dq": (self.dq, np.uint32)}
        arrays.update({name: (array, np.float32) for name, array in self.var.items()})
        for name, (array, dtype) in arrays.items():
            array = as_model(array, dtype)
            if array.shape != (self.shape[1:] if self.image else self.shape):
                raise ValueError(f"{model_name(model)}: {name.upper()} has shape {array.shape}, "
                                 f"expected {self.shape}")
            existing = model.instance.get(name)
            if _same_view(existing, array):
                continue  # the model's own array (or a view of it with the same layout)
            if _can_overwrite(existing, array):
                # into the model's own buffer: replacing it would leave the original alive
                # (the opened file's HDUs keep a reference), one extra copy per array and step
                np.copyto(existing, array, casting="equiv")
            else:
                model.instance[name] = np.ascontiguousarray(array)
        for var_name in self.dropped:
            if var_name in model.instance:
                del model.instance[var_name]


def _can_overwrite(existing, array):
    """True when ``array`` can be copied into the model's ``existing`` array in place."""
    return (isinstance(existing, np.ndarray) and existing is not array
            and existing.shape == array.shape and np.can_cast(array.dtype, existing.dtype, "equiv")
            and existing.flags.writeable and not np.may_share_memory(existing, array))


def _same_view(existing, array):
    """True when ``array`` is ``existing`` or a view of the same memory with the same layout."""
    if existing is array:
        return True
    if not isinstance(existing, np.ndarray):
        return False
    return (existing.shape == array.shape and existing.dtype == array.dtype
            and existing.strides == array.strides
            and existing.__array_interface__["data"][0] == array.__array_interface__["data"][0])


def use_native_byte_order(model):
    """Convert the model's pixel arrays from the file's big-endian layout to native, in place.

    Arrays read from FITS are big-endian views of buffers that the opened file's HDUs also
    reference: numpy converts them on every read and write (each step would pay it), and
    replacing them by native copies would keep the originals alive. Swapping the bytes of the
    buffer and re-viewing it costs one pass and no memory. The HDU objects are not used
    afterwards (a datamodel saves from its own tree). Returns the names converted.
    """
    converted = []
    for name in ("data", "err", "dq", *VAR_NAMES):
        array = model.instance.get(name)
        if (isinstance(array, np.ndarray) and array.dtype.byteorder not in ("=", "|")
                and not array.dtype.isnative and array.flags.writeable):
            array.byteswap(inplace=True)
            model.instance[name] = array.view(array.dtype.newbyteorder("="))
            converted.append(name)
    return converted
