"""Writing products so that nothing is ever half-written or silently overwritten.

Every file the package writes (step and pipeline products, the ``klipprep`` summary table and
figure) goes through `atomic_path`: it is written under a hidden temporary name in its final
folder (``.<name>.<pid>.part``) and renamed onto its final name with `os.replace` only once it is
complete.  A rename within one folder is atomic on POSIX file systems, so a file under a final name
is always whole: an interrupted run (SIGKILL, SIGTERM, Ctrl-C, full disk) leaves either the
previous file, or nothing, plus at most one hidden ``.part`` file (removed when the interruption
is a Python exception such as Ctrl-C or a full disk; left behind only by SIGKILL/SIGTERM, and
removed by the next write of the same file once the process that left it is gone).

`check_output_paths` is the rule that an output never replaces an input: a step run on its own
product in the same folder, or ``--suffix`` equal to the input's suffix, is refused before any
processing with a message that says what to do.
"""

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "OutputPathError", "atomic_path", "check_output_dir", "check_output_paths", "input_paths",
    "save_model_atomic", "temporary_path", "warn_if_replacing",
]

log = logging.getLogger(__name__)

#: Files written by this process (resolved paths): replacing one of them is not reported.
_WRITTEN = set()


class OutputPathError(ValueError):
    """An output path that cannot be used: it is an input, or its folder is not a folder."""


def temporary_path(path):
    """The hidden temporary name under which ``path`` is written before the rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.part")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block completes.

    If the block raises (including KeyboardInterrupt), the temporary file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    _remove_stale_parts(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the data reach the disk before the name does
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours, or cannot tell
        return True
    return True


def _remove_stale_parts(path):
    """Remove the temporary files of ``path`` left by killed processes (SIGKILL, SIGTERM)."""
    for part in path.parent.glob(f".{path.name}.*.part"):
        pid = part.name[len(path.name) + 2: -len(".part")]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()
                log.info("%s: removed the temporary file of an interrupted run", part)


def save_model_atomic(model, path):
    """Save a datamodel to ``path`` (FITS or ASDF) atomically; return ``str(path)``.

    ``meta.filename`` records the final name (not the temporary one), as `DataModel.save` would.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".fits", ".asdf"):
        raise OutputPathError(f"{path}: unknown product type {ext!r} (use .fits or .asdf)")
    model.meta.filename = path.name
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            if ext == ".fits":
                model.to_fits(fh)
            else:
                model.to_asdf(fh)
    _WRITTEN.add(path.resolve())
    return str(path)


def warn_if_replacing(path):
    """Log a warning if ``path`` exists and was not written by this process (an earlier run)."""
    path = Path(path)
    if path.exists() and path.resolve() not in _WRITTEN:
        log.warning("%s: replacing a file written before this run (another run into the same "
                    "folder?)", path)
        return True
    return False


def input_paths(init, models):
    """The files a run reads: the input file, or an association and its members."""
    path = Path(init)
    paths = [path]
    if path.suffix.lower() == ".json":
        group = models if isinstance(models, Sequence) else [models]
        paths += [path.parent / m.meta.filename for m in group if m.meta.filename]
        try:
            asn = json.loads(path.read_text())
            paths += [path.parent / str(member.get("expname", ""))
                      for product in asn.get("products", []) for member in product["members"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
    return [p for p in paths if p.name]


def _same_file(a, b):
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_output_paths(outputs, inputs):
    """Raise `OutputPathError` if an output path is one of the input paths, or appears twice.

    Parameters
    ----------
    outputs : iterable of path
        The paths the products will be written to.
    inputs : iterable of path
        The files the run reads (the input file, or every member of an association).
    """
    inputs = [Path(p) for p in inputs]
    outputs = [Path(p) for p in outputs]
    seen = {}
    for out in outputs:
        key = os.path.abspath(out)
        if key in seen:
            raise OutputPathError(
                f"{out}: two products of this run would be written to this one file (an "
                "association member listed twice?); each input must give its own product"
            )
        seen[key] = out
    for out in outputs:
        for inp in inputs:
            if _same_file(out, inp):
                where = "" if str(out) == str(inp) else f" ({out})"
                raise OutputPathError(
                    f"{inp}: the output would overwrite this input{where}. An output never "
                    "replaces an input: give --output_dir=<another folder>, another --suffix, "
                    "or --output_file"
                )


def check_output_dir(output_dir):
    """Raise `OutputPathError` if ``output_dir`` exists and is not a folder."""
    if not output_dir:
        return
    path = Path(os.path.expandvars(os.path.expanduser(str(output_dir))))
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"--output_dir={output_dir}: is a file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"--output_dir={output_dir}: {parent} is a file, "
                                      "not a folder")
            break
