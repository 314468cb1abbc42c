"""Roles of the exposures of an association: SCI, REF, SCI_BG, REF_BG.

The ASN ``exptype`` says science / psf / background; which target a background belongs to is
decided from the metadata, in this order:

1. the background's target name (TARGPROP without a BG / BACK / BACKGROUND / BKG suffix) equals
   a science or a reference target name;
2. IS_PSF of the background (rarely set on backgrounds, but honoured);
3. the nearest observation number in the same program, among science and reference exposures.

The reason is kept with each decision so that the step can log it.
"""

import re
from dataclasses import dataclass

__all__ = ["Role", "classify_members", "target_kind"]

_BG_SUFFIX = re.compile(r"[-_ ]*(BACKGROUND|BACKGRND|BACK|BKGD|BKG|BG)[-_ ]*\d*$", re.IGNORECASE)


@dataclass(frozen=True)
class Role:
    """Role of one exposure, and why."""

    kind: str  # "SCI", "REF", "SCI_BG" or "REF_BG"
    reason: str


def _exptype(model):
    exptype = model.meta.asn.exptype
    return str(exptype).lower() if exptype else None


def _name_stem(model):
    name = model.meta.target.proposer_name or model.meta.target.catalog_name or ""
    return _BG_SUFFIX.sub("", str(name).strip()).upper()


def _obs(model):
    try:
        return int(model.meta.observation.program_number), int(
            model.meta.observation.observation_number)
    except (TypeError, ValueError):
        return None


def is_background(model):
    """True if the exposure is a dedicated background (ASN exptype, BKGDTARG or TARGPROP)."""
    exptype = _exptype(model)
    if exptype is not None:
        return exptype == "background"
    if model.meta.observation.bkgdtarg:
        return True
    name = str(model.meta.target.proposer_name or "")
    return bool(_BG_SUFFIX.search(name))


def target_kind(model):
    """``"REF"`` for a reference-star exposure (ASN exptype psf, or IS_PSF), else ``"SCI"``."""
    exptype = _exptype(model)
    if exptype == "psf" or (exptype is None and model.meta.exposure.psf_reference):
        return "REF"
    return "SCI"


def classify_members(models):
    """Role of each model of an association (same order as ``models``)."""
    targets = [m for m in models if not is_background(m)]
    names = {"SCI": set(), "REF": set()}
    for model in targets:
        names[target_kind(model)].add(_name_stem(model))
    roles = []
    for model in models:
        if not is_background(model):
            kind = target_kind(model)
            reason = "ASN exptype psf / IS_PSF" if kind == "REF" else "science target"
            roles.append(Role(kind, reason))
            continue
        stem = _name_stem(model)
        in_sci, in_ref = stem in names["SCI"], stem in names["REF"]
        if stem and in_sci != in_ref:
            kind = "SCI" if in_sci else "REF"
            roles.append(Role(f"{kind}_BG", f"target name {stem!r} matches a {kind} exposure"))
            continue
        if model.meta.exposure.psf_reference:
            roles.append(Role("REF_BG", "IS_PSF is set on the background"))
            continue
        obs = _obs(model)
        best = None
        for target in targets:
            tobs = _obs(target)
            if obs is None or tobs is None or tobs[0] != obs[0]:
                continue
            distance = abs(tobs[1] - obs[1])
            if best is None or distance < best[0]:
                best = (distance, target_kind(target))
        if best is not None:
            roles.append(Role(f"{best[1]}_BG", f"nearest observation number is a {best[1]}"))
        else:
            roles.append(Role("SCI_BG", "no metadata tells; assumed science background"))
    return roles
