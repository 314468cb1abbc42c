"""``klipprep associate``: level-3 associations from a folder of stage-2 coronagraphic files.

Only the FITS headers are read (primary and SCI), never the data, so a whole MAST download is
sorted in seconds. Files are grouped by what must be identical for frames to be prepared together:
program, instrument, detector, subarray, filter, coronagraph mask and pupil. Detectors are never
mixed. The role of every exposure follows the rule of ``subtract_background``
(:func:`jwst_klipprep.roles.classify_members` is applied to the header values):

* ``background``: BKGDTARG = T, or a target name (TARGPROP) ending in BACKGROUND / BKG / BG...;
* ``psf``: IS_PSF = T;
* ``science``: everything else.

A group may hold several science targets: the preparation is per exposure (each star is centred
and aligned on its own), and the KLIP code chooses its references later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from jwst_klipprep.base import CORON_EXP_TYPES
from jwst_klipprep.roles import classify_members

__all__ = ["Exposure", "Group", "associate", "format_groups", "read_exposure"]

log = logging.getLogger(__name__)

#: Stage-2 products that the association accepts (file name suffixes).
STAGE2_SUFFIXES = ("calints", "cal")

TRUNCATED = "incomplete file (interrupted download?)"
_EXPTYPE = {"SCI": "science", "REF": "psf", "SCI_BG": "background", "REF_BG": "background"}
_ROLE_ORDER = {"science": 0, "psf": 1, "background": 2}


@dataclass(frozen=True)
class Exposure:
    """Header values of one stage-2 file, as far as the association needs them."""

    path: Path
    program: str
    observation: str
    instrument: str
    detector: str
    subarray: str
    filter: str
    pupil: str
    coronagraph: str
    exp_type: str
    is_psf: bool
    bkgdtarg: bool
    targprop: str
    targname: str
    bunit: str
    exptime: float
    nints: int

    @property
    def key(self):
        """What must be equal for two exposures to be prepared together."""
        return (self.program, self.instrument, self.detector, self.subarray, self.filter,
                self.coronagraph, self.pupil)

    def as_member_model(self, exptype=None):
        """A header-only stand-in with the attributes ``_members`` reads from a datamodel."""
        meta = SimpleNamespace(
            asn=SimpleNamespace(exptype=exptype),
            target=SimpleNamespace(proposer_name=self.targprop, catalog_name=self.targname),
            observation=SimpleNamespace(program_number=self.program,
                                        observation_number=self.observation,
                                        bkgdtarg=self.bkgdtarg),
            exposure=SimpleNamespace(psf_reference=self.is_psf),
        )
        return SimpleNamespace(meta=meta)


@dataclass
class Group:
    """One association: its name, members (``(Exposure, role)``) and warnings.

    ``role`` is ``"SCI"``, ``"REF"``, ``"SCI_BG"`` or ``"REF_BG"``; the ASN ``exptype`` is
    ``science``, ``psf`` or ``background``.
    """

    name: str
    key: tuple
    members: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    asn_path: Path | None = None

    def count(self, *roles):
        """Number of members with one of ``roles``."""
        return sum(1 for _, role in self.members if role in roles)

    def targets(self, *roles):
        """Distinct target names (TARGPROP) of the members with one of ``roles``."""
        return sorted({e.targprop for e, role in self.members if role in roles})

    def exptime(self, *roles):
        """Total effective exposure time (s) of the members with one of ``roles``."""
        return sum(e.exptime for e, role in self.members if role in roles)

    def asn_dict(self, outdir):
        """The level-3 ``coron3`` association (member names relative to ``outdir``)."""
        from jwst_klipprep import __version__

        program, instrument, detector, subarray, filt, mask, pupil = self.key
        members = sorted(self.members, key=lambda m: (_ROLE_ORDER[_EXPTYPE[m[1]]],
                                                      m[0].path.name))
        return {
            "asn_type": "coron3",
            "asn_rule": "candidate_Asn_Lv3Coron",
            "version_id": None,
            "code_version": f"jwst_klipprep {__version__}",
            "degraded_status": "No known degraded exposures in association.",
            "program": program,
            "constraints": (f"klipprep associate: INSTRUME={instrument} DETECTOR={detector} "
                            f"SUBARRAY={subarray} FILTER={filt} CORONMSK={mask} PUPIL={pupil}"),
            "asn_id": "klipprep",
            "target": ", ".join(self.targets("SCI")),
            "asn_pool": "klipprep_associate",
            "products": [{
                "name": self.name,
                "members": [{"expname": _relative(e.path, outdir), "exptype": _EXPTYPE[role]}
                            for e, role in members],
            }],
        }


def _relative(path, outdir):
    try:
        return os.path.relpath(Path(path).resolve(), Path(outdir).resolve())
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())


def _str(header, key, default=""):
    value = header.get(key, default)
    return default if value is None else str(value).strip()


def _float(header, key):
    try:
        return float(header.get(key))
    except (TypeError, ValueError):
        return float("nan")


def read_exposure(path):
    """Header values of a stage-2 coronagraphic file, or a string saying why it is skipped.

    Reads the primary and SCI headers only (no data).
    """
    path = Path(path)
    stem = path.name[:-len(".fits")] if path.name.endswith(".fits") else None
    if stem is None:
        return "not a FITS file"
    suffix = stem.rsplit("_", 1)[-1] if "_" in stem else ""
    if suffix not in STAGE2_SUFFIXES:
        return f"not a stage-2 product (suffix {suffix or 'none'!r}; need calints or cal)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # "may have been truncated"
            with fits.open(path, lazy_load_hdus=True, memmap=True) as hdul:
                primary = hdul[0].header
                try:
                    sci = hdul["SCI"].header
                except KeyError:
                    return "no SCI extension"
                primary, sci = primary.copy(), sci.copy()
    except AstropyUserWarning as exc:
        return f"{TRUNCATED}: {exc}"
    except (OSError, ValueError) as exc:
        return f"unreadable FITS file ({exc})"
    exp_type = _str(primary, "EXP_TYPE")
    if exp_type not in CORON_EXP_TYPES:
        return f"EXP_TYPE {exp_type or 'missing'} is not coronagraphic"
    nints = primary.get("NINTS", sci.get("NAXIS3", 1) if sci.get("NAXIS", 2) == 3 else 1)
    exptime = _float(primary, "EFFEXPTM")
    if exptime != exptime:  # NaN: fall back on XPOSURE of the SCI header
        exptime = _float(sci, "XPOSURE")
    return Exposure(
        path=path, program=_str(primary, "PROGRAM"), observation=_str(primary, "OBSERVTN"),
        instrument=_str(primary, "INSTRUME").upper(), detector=_str(primary, "DETECTOR").upper(),
        subarray=_str(primary, "SUBARRAY").upper(), filter=_str(primary, "FILTER").upper(),
        pupil=_str(primary, "PUPIL", "N/A").upper() or "N/A",
        coronagraph=_str(primary, "CORONMSK").upper(), exp_type=exp_type,
        is_psf=bool(primary.get("IS_PSF", False)), bkgdtarg=bool(primary.get("BKGDTARG", False)),
        targprop=_str(primary, "TARGPROP"), targname=_str(primary, "TARGNAME"),
        bunit=_str(sci, "BUNIT", "?"), exptime=exptime, nints=int(nints or 1),
    )


def _suffix(exposure):
    return exposure.path.name[:-len(".fits")].rsplit("_", 1)[-1]


def _collect(paths):
    """Files to read: folders are listed (``*.fits``, not recursive), files kept as given."""
    files, notes = [], []
    for item in paths:
        item = Path(item)
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if p.name.endswith(".fits")))
        elif item.exists():
            files.append(item)
        else:
            notes.append((item, "not found"))
    return files, notes


def _mask_token(instrument, coronagraph):
    token = coronagraph.lower().replace("_", "").replace("-", "")
    if instrument == "NIRCAM":
        token = re.sub(r"^mask[ab](?=\d|lwb|swb)", "mask", token)
    return token or "nomask"


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "target"


def _group_warnings(group):
    out = []
    if not group.count("REF"):
        out.append("no reference (psf) exposure: only ADI is possible")
    targets = group.targets("SCI")
    if len(targets) > 1:
        out.append(f"{len(targets)} science targets ({', '.join(targets)}) in one association")
    units = sorted({e.bunit for e, _ in group.members})
    if len(units) > 1:
        out.append(f"mixed units (BUNIT): {', '.join(units)}")
    if group.count("SCI_BG", "REF_BG") and not group.count("SCI_BG") and group.count("SCI"):
        out.append("no science background: subtract_background will use the reference ones")
    return out


def associate(paths, outdir=None, *, write=True, across_programs=False):
    """Group stage-2 coronagraphic files into level-3 associations (headers only).

    Parameters
    ----------
    paths : str, os.PathLike or list of them
        Files and/or folders (folders: every ``*.fits`` directly inside). Files that are not
        stage-2 coronagraphic products (``_calints.fits`` / ``_cal.fits`` with a coronagraphic
        EXP_TYPE) are skipped with an INFO log line; so is the ``_cal`` file of an exposure whose
        ``_calints`` file is there too (both would write the same product), and a second copy of
        a file.
    outdir : str or os.PathLike, optional
        Folder for the ``<name>_asn.json`` files (created). Member names are written relative to
        it; when that is another folder than the data's, jwst's association loader warns that the
        ASN "contains path information" (harmless). Default: the folder of the group's files
        (plain member names, no warning) if they share one, else the current folder.
    write : bool
        Write the ASN files (False: only return the groups).
    across_programs : bool
        Group exposures of different programs together (e.g. a science program and the
        reference-star program taken for it, downloaded into one folder). The name and the
        ASN ``program`` are those of the science exposures. Default False: one program per
        association, as the official level-3 associations.

    Returns
    -------
    list of Group
        Sorted by name. Names are ``jw<program>_<filter>_<mask>`` (plus ``_<detector>``,
        ``_<subarray>``, ``_<pupil>`` only where needed to keep names unique); ``asn_path`` is
        set when written. Groups with no
        science exposure are not returned (a warning is logged).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, notes = _collect(paths)
    by_key = {}
    seen = {}  # (group key, exposure name without suffix) -> Exposure
    for path in files:
        exposure = read_exposure(path)
        if isinstance(exposure, str):
            notes.append((path, exposure))
            continue
        # one product per exposure: a _cal and a _calints of the same exposure (both come with a
        # MAST download), or two copies of one file, would write the same _klipprep product
        key = _group_key(exposure, across_programs)
        ident = (key, exposure.path.name.rsplit("_", 1)[0])
        first = seen.setdefault(ident, exposure)
        if first is not exposure:
            keep, drop = ((exposure, first) if _suffix(exposure) == "calints"
                          and _suffix(first) != "calints" else (first, exposure))
            notes.append((drop.path, f"same exposure as {keep.path}; {keep.path.name} is used"))
            if keep is exposure:
                seen[ident] = exposure
                by_key[key].remove(first)
                by_key[key].append(exposure)
            continue
        by_key.setdefault(key, []).append(exposure)
    for path, why in notes:
        level = logging.WARNING if why.startswith(TRUNCATED) else logging.INFO
        log.log(level, "associate: skipped %s: %s", path, why)

    groups = []
    for key, exposures in sorted(by_key.items()):
        roles = classify_members([e.as_member_model() for e in exposures])
        members = [(e, r.kind) for e, r in zip(exposures, roles, strict=True)]
        if not any(role == "SCI" for _, role in members):
            names = ", ".join(sorted(e.path.name for e in exposures))
            log.warning("associate: no science exposure for %s (%s): no association written",
                        "/".join(k for k in key if k), names)
            continue
        if across_programs:  # named after the science program(s)
            key = ("-".join(sorted({e.program for e, role in members if role == "SCI"})),
                   *key[1:])
        program, instrument, detector, subarray, filt, mask, pupil = key
        group = Group(name=f"jw{program}_{filt.lower()}_{_mask_token(instrument, mask)}",
                      key=key, members=members)
        group.warnings = _group_warnings(group)
        groups.append(group)
    _make_unique(groups)
    groups.sort(key=lambda g: g.name)
    if write:
        for group in groups:
            folders = {e.path.resolve().parent for e, _ in group.members}
            folder = Path(outdir) if outdir else (folders.pop() if len(folders) == 1
                                                  else Path("."))
            folder.mkdir(parents=True, exist_ok=True)
            group.asn_path = folder / f"{group.name}_asn.json"
            tmp = group.asn_path.with_name(f".{group.asn_path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(group.asn_dict(folder), indent=2) + "\n")
            os.replace(tmp, group.asn_path)
    for group in groups:
        for warning in group.warnings:
            log.warning("associate: %s: %s", group.name, warning)
    return groups


def _group_key(exposure, across_programs):
    """The grouping key of an exposure (its program left out with ``across_programs``)."""
    return ("", *exposure.key[1:]) if across_programs else exposure.key


def _make_unique(groups):
    """Append detector, then subarray, then pupil to names that are not unique."""
    for index in (2, 3, 6):  # positions in Group.key
        names = {}
        for group in groups:
            names.setdefault(group.name, []).append(group)
        for same in names.values():
            if len(same) > 1:
                for group in same:
                    group.name = f"{group.name}_{_slug(group.key[index])}"


def format_groups(groups):
    """A plain-text table of the groups: files per role, targets, exposure times.

    The targets column is ``science targets / reference targets``; the times are the summed
    effective exposure times (EFFEXPTM, else XPOSURE) of the science and reference exposures.
    """
    header = ("association", "det", "SCI", "REF", "SCI_BG", "REF_BG", "t_sci[s]", "t_ref[s]",
              "targets")
    rows = [header]
    for g in groups:
        targets = ", ".join(g.targets("SCI")) + " / " + (", ".join(g.targets("REF")) or "-")
        rows.append((g.name, g.key[2], str(g.count("SCI")), str(g.count("REF")),
                     str(g.count("SCI_BG")), str(g.count("REF_BG")), f"{g.exptime('SCI'):.0f}",
                     f"{g.exptime('REF'):.0f}", targets))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
