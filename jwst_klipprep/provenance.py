"""Provenance: what a step measured (``meta.klipprep.<alias>``) and its status
(``meta.cal_step.<alias>``)."""

import numpy as np

__all__ = ["record", "set_status"]


def _plain(value):
    """Convert numpy values to plain Python for the ASDF tree."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def record(model, alias, **values):
    """Record what a step measured or applied under ``meta.klipprep.<alias>``."""
    node = model.meta.instance.setdefault("klipprep", {})
    node[alias] = _plain(values)


def set_status(model, alias, status="COMPLETE"):
    """Set ``meta.cal_step.<alias>`` (COMPLETE, SKIPPED or FAILED)."""
    if status not in ("COMPLETE", "SKIPPED", "FAILED"):
        raise ValueError(f"bad step status {status!r}")
    model.meta.cal_step.instance[alias] = status
