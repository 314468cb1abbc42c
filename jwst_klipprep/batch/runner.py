"""``klipprep batch``: run the klipprep pipeline on many associations as Dask tasks.

One task per association. A task runs the pipeline exactly as ``strun klipprep asn.json ...``
would (``stpipe.Step.from_cmdline``, the function behind ``strun``, builds it from the same
arguments), on a worker of a ``dask.distributed`` cluster: a :class:`~distributed.LocalCluster`
on this machine by default (one single-threaded worker process per core), or any running
scheduler (``tcp://host:8786``).

Only file names and the small result records travel between the client and the workers; the
workers read the stage-2 files and write the products themselves, so they need a file system
shared with the client (the same paths).
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path

from astropy.table import Table

__all__ = ["SUMMARY_NAME", "close_cluster_quietly", "expected_products", "find_asns",
           "product_is_complete", "run_batch", "worker_environ"]

log = logging.getLogger(__name__)

#: File name of the batch summary table, in the output folder.
SUMMARY_NAME = "klipprep_batch_summary.ecsv"

_STAGE2_SUFFIX = re.compile(r"_(calints|cal)$")
_TRUE = ("true", "t", "yes", "y", "1")
_COLUMNS = ("asn", "status", "seconds", "cpu_seconds", "peak_rss_mb", "n_products", "products",
            "worker", "error")


def find_asns(items):
    """Association files from files and folders (folders: the ``*_asn.json`` inside, else the
    ``*.json``), resolved, in the order given, each once."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    out = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = sorted(item.glob("*_asn.json")) or sorted(item.glob("*.json"))
            if not found:
                raise FileNotFoundError(f"{item}: no association (*_asn.json) in this folder")
            out.extend(found)
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such association file or folder")
    return list(dict.fromkeys(p.resolve() for p in out))  # each association once


def _keeps_backgrounds(args):
    for arg in args:
        name, _, value = str(arg).partition("=")
        if name.lstrip("-") == "keep_backgrounds" and value.strip().lower() in _TRUE:
            return True
    return False


def expected_products(asn_path, *, keep_backgrounds=False):
    """File names of the ``_klipprep.fits`` products the pipeline writes for an association.

    One per ``science`` and ``psf`` member (and ``background`` with ``keep_backgrounds``): the
    member name with its stage-2 suffix (``_calints`` / ``_cal``) replaced by ``_klipprep``.
    """
    asn = json.loads(Path(asn_path).read_text())
    names = []
    for product in asn.get("products", []):
        for member in product.get("members", []):
            exptype = str(member.get("exptype", "science")).lower()
            if exptype == "background" and not keep_backgrounds:
                continue
            stem = Path(str(member["expname"])).name
            stem = stem[:-5] if stem.endswith(".fits") else stem
            names.append(_STAGE2_SUFFIX.sub("", stem) + "_klipprep.fits")
    return names


def product_is_complete(path):
    """True if a product exists, opens, has readable data, and the pipeline finished it.

    Finished: ``meta.cal_step.klipprep == "COMPLETE"``, or a status (COMPLETE / SKIPPED) for every
    step of the pipeline. A truncated, empty or half-written file is not complete.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    from stdatamodels.jwst import datamodels

    from jwst_klipprep.pipeline.klipprep_pipeline import STEP_ORDER

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy's "file may have been truncated" included
            with datamodels.open(path) as model:
                status = dict(model.meta.cal_step.instance)
                data = model.data
                if data is None or data.size == 0:
                    return False
                float(data.reshape(-1)[-1])  # touches the end of the last plane
    except Exception:  # noqa: BLE001 - any failure to read means "not complete"
        return False
    if status.get("klipprep") == "COMPLETE":
        return True
    return all(status.get(alias) in ("COMPLETE", "SKIPPED") for alias in STEP_ORDER)


def _worker_name():
    """The Dask worker's address inside a task, else the host name."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def _peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def run_one(asn_path, output_dir, args=(), *, config=None, force=False):
    """Run the pipeline on one association (the Dask task; also usable directly).

    Never raises: returns a dict with the columns of the summary table (status ``ok``,
    ``skipped`` or ``failed``).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    asn_path, output_dir = Path(asn_path), Path(output_dir)
    result = {"asn": str(asn_path), "status": "failed", "seconds": 0.0, "cpu_seconds": 0.0,
              "peak_rss_mb": 0.0, "n_products": 0, "products": "",
              "worker": _worker_name(), "error": ""}
    try:
        if not asn_path.is_file():
            raise FileNotFoundError(f"{asn_path}: association not found on worker "
                                    f"{socket.gethostname()} (shared file system?)")
        names = expected_products(asn_path, keep_backgrounds=_keeps_backgrounds(args))
        if not names:
            raise ValueError(f"{asn_path}: association has no science or psf member")
        paths = [output_dir / name for name in names]
        if not force and all(product_is_complete(p) for p in paths):
            result.update(status="skipped", n_products=len(names), products=" ".join(names))
            return result
        output_dir.mkdir(parents=True, exist_ok=True)
        argv = [str(config) if config else "klipprep", str(asn_path), *map(str, args),
                f"--output_dir={output_dir}", "--disable-crds-steppars"]
        if not any(str(a).startswith(("--log-", "--verbose", "-v")) for a in args):
            log_file = output_dir / f"{asn_path.stem}.log"
            argv += [f"--log-file={log_file}", "--log-stream=null"]
        _quiet_cmdline(argv)
        missing = [p.name for p in paths if not product_is_complete(p)]
        if missing:
            raise RuntimeError(f"pipeline finished but products are missing or incomplete: "
                               f"{', '.join(missing)}")
        result.update(status="ok", n_products=len(names), products=" ".join(names))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one ASN failing must not stop others
        message = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
        result["error"] = message[:2000]
        log.debug("batch: %s failed:\n%s", asn_path, traceback.format_exc())
    finally:
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["cpu_seconds"] = round(time.process_time() - c0, 3)
        result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def _quiet_cmdline(argv, *, run=True):
    """``Step.from_cmdline(argv)`` (what ``strun`` runs) with its console output captured.

    stpipe reports a bad argument with argparse (usage on stderr, then ``SystemExit``); that is
    turned into a ``ValueError`` carrying argparse's own message. With ``run=False`` the pipeline
    is only built from the arguments (validation), not run.
    """
    import contextlib
    import io

    from stpipe import Step

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            if run:
                return Step.from_cmdline(argv)  # what `strun` runs
            from stpipe import _cmdline  # private: only to check arguments without running

            parsed = _cmdline._config_and_class_from_cmdline(argv)
            return _cmdline._build_step_from_args(*parsed, argv)
    except SystemExit as exc:
        lines = [line for line in buffer.getvalue().splitlines() if "error:" in line]
        message = lines[-1].split("error:", 1)[1].strip() if lines else f"exit status {exc.code}"
        raise ValueError(f"bad pipeline arguments: {message}") from None


def validate_args(args=(), config=None):
    """Check pipeline arguments with stpipe's own parser, without running anything.

    Raises ``ValueError`` with argparse's / the configuration validator's message.
    """
    argv = [str(config) if config else "klipprep", *map(str, args), "--disable-crds-steppars"]
    try:
        _quiet_cmdline(argv, run=False)
    except ValueError as exc:
        if str(exc).startswith("bad pipeline arguments"):
            raise
        raise ValueError(f"bad pipeline arguments: {exc}") from None
    except AttributeError:  # stpipe's private helpers changed: the tasks will report it
        log.debug("batch: stpipe's parser helpers are unavailable; arguments not pre-checked")


def _write_summary(rows, path):
    """Write the summary ECSV atomically (temporary name + os.replace)."""
    table = Table(rows=[[r[c] for c in _COLUMNS] for r in rows] or None, names=_COLUMNS,
                  dtype=(str, str, float, float, float, int, str, str, str))
    table.meta["description"] = "klipprep batch: one row per association"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    table.write(tmp, format="ascii.ecsv", overwrite=True)
    os.replace(tmp, path)
    return table


def _has_bokeh():
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _start_client(scheduler, n_workers, memory_limit):
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        return client, None
    if not n_workers:
        n_workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count() or 1)
    n_workers = int(n_workers)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            memory_limit=memory_limit or "auto",
            dashboard_address="127.0.0.1:0",  # a free port (the scheduler's HTTP server runs)
        )
    return Client(cluster), cluster


def worker_environ():
    """Dask's environment for new worker processes, without its default MALLOC_TRIM_THRESHOLD_
    and with one pipeline thread per worker (``$JWST_KLIPPREP_THREADS``, unless the user set it).

    Setting that variable turns off glibc's adaptive mmap threshold, so every array above 128 kB
    is mapped and unmapped again: the pipeline then costs ~10 % more CPU
    (``python benchmarks/bench_batch.py --malloc-check``). A value set by the user is kept.
    """
    import dask
    import distributed  # noqa: F401 - its configuration defaults

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    if str(environ.get("MALLOC_TRIM_THRESHOLD_")) == "65536":  # Dask's default
        del environ["MALLOC_TRIM_THRESHOLD_"]
    # one single-threaded worker per core: the pipeline's per-exposure threads would only
    # oversubscribe the cores (a value set by the user is kept)
    from jwst_klipprep.base import THREADS_ENV

    environ.setdefault(THREADS_ENV, os.environ.get(THREADS_ENV, "1"))
    return environ


def _slow_exit(record):
    return "Worker process still alive after" not in record.getMessage()


def close_cluster_quietly(cluster):
    """Close a local cluster. Every result is in by then: a worker process slow to exit on a
    busy machine (Dask kills it after 4 s, with a warning) loses nothing, so that warning is
    dropped."""
    nanny_log = logging.getLogger("distributed.nanny")
    nanny_log.addFilter(_slow_exit)
    try:
        cluster.close()
    finally:
        nanny_log.removeFilter(_slow_exit)


def run_batch(asns, output_dir, *, scheduler=None, n_workers=None, memory_limit=None, args=(),
              config=None, force=False, summary=None, echo=print):
    """Run the klipprep pipeline on every association, one Dask task each.

    Parameters
    ----------
    asns : str, os.PathLike or list of them
        Association files, or folders of ``*_asn.json`` (e.g. written by ``klipprep associate``).
    output_dir : str or os.PathLike
        Where every product, summary table, figure and log goes (on a file system the workers
        share with this process).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``). Default: a ``LocalCluster``
        on 127.0.0.1 with ``n_workers`` single-threaded worker processes.
    n_workers : int, optional
        Local workers (default: the cores this process may use). Ignored with ``scheduler``.
    memory_limit : str or int, optional
        Memory limit per local worker (e.g. ``"4GB"``; default: the machine's memory divided
        among the workers). A worker that goes over it is restarted by its nanny and the task
        retried elsewhere; after the scheduler's allowed failures (3 by default) the ASN is
        reported as failed (``KilledWorker``).
    args : sequence of str
        Pipeline arguments exactly as for ``strun klipprep`` (``--steps.pad_frames.npix=80``,
        ``--save_diagnostics=False``...). ``--output_dir`` is set by the batch.
    config : str or os.PathLike, optional
        A parameter file (``strun my_pars.asdf asn.json``), e.g. written with
        ``--save-parameters``.
    force : bool
        Rerun associations whose products are all present and complete (default: skip them).
    summary : str or os.PathLike, optional
        Summary table path (default ``<output_dir>/klipprep_batch_summary.ecsv``); rewritten
        atomically after every finished association.
    echo : callable
        Where the progress lines go (``print`` by default; ``None`` for silence).

    Returns
    -------
    astropy.table.Table
        One row per association, in the order given: asn, status (``ok``, ``skipped``,
        ``failed``), seconds, cpu_seconds, peak_rss_mb (of the worker process so far),
        n_products, products, worker, error.
    """
    echo = echo or (lambda *a, **k: None)
    paths = find_asns(asns)
    if not paths:
        raise ValueError("no association to run")
    output_dir = Path(output_dir).resolve()
    summary = Path(summary) if summary else output_dir / SUMMARY_NAME
    config = Path(config).resolve() if config else None
    args = tuple(str(a) for a in args)
    for arg in args:
        if arg.split("=", 1)[0] in ("--output_dir", "--output-dir"):
            raise ValueError("pass the output folder as output_dir, not in args")
    _check_product_clashes(paths, _keeps_backgrounds(args))
    validate_args(args, config)

    from distributed import as_completed

    t0 = time.perf_counter()
    client, cluster = _start_client(scheduler, n_workers, memory_limit)
    try:
        workers = client.scheduler_info().get("workers", {})
        echo(f"klipprep batch: {len(paths)} association(s) on {len(workers)} worker(s), "
             f"scheduler {client.scheduler.address}")
        note = "" if scheduler or _has_bokeh() else " (install bokeh to see the dashboard)"
        echo(f"klipprep batch: dashboard {client.dashboard_link}{note}")
        futures = {}
        for index, path in enumerate(paths):
            future = client.submit(run_one, str(path), str(output_dir), args,
                                   config=str(config) if config else None, force=force,
                                   key=f"klipprep-{index:04d}-{path.name}", pure=False)
            futures[future] = index
        rows = [None] * len(paths)
        done = 0
        for future in as_completed(futures):
            index = futures[future]
            if future.status == "finished":
                row = future.result()
            else:  # the worker died (memory limit, crash), or the task was lost or cancelled
                row = {"asn": str(paths[index]), "status": "failed", "seconds": float("nan"),
                       "cpu_seconds": float("nan"), "peak_rss_mb": float("nan"),
                       "n_products": 0, "products": "", "worker": "",
                       "error": _future_error(future)}
            rows[index] = row
            done += 1
            echo(f"[{done}/{len(paths)}] {row['status']:7s} {Path(row['asn']).name} "
                 f"{row['seconds']:.1f} s" + (f"  {row['error']}" if row["error"] else ""))
            _write_summary([r for r in rows if r is not None], summary)
    finally:
        client.close()
        if cluster is not None:
            close_cluster_quietly(cluster)
    table = _write_summary(rows, summary)
    counts = {s: int((table["status"] == s).sum()) for s in ("ok", "skipped", "failed")}
    echo(f"klipprep batch: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} "
         f"failed in {time.perf_counter() - t0:.1f} s; summary {summary}")
    return table


def _future_error(future):
    try:
        exc = future.exception(timeout=10)
    except BaseException as other:  # noqa: BLE001 - cancelled, timed out...
        exc = other
    return f"{type(exc).__name__}: {exc}"[:2000] if exc else f"task {future.status}"


def _check_product_clashes(paths, keep_backgrounds):
    """Two associations must not write the same product into one output folder."""
    owner = {}
    for path in paths:
        try:
            names = expected_products(path, keep_backgrounds=keep_backgrounds)
        except (OSError, ValueError, KeyError):
            continue  # reported by its task
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: two members would write the same product "
                             f"({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
        for name in names:
            if owner.setdefault(name, path) != path:
                raise ValueError(f"{path} and {owner[name]} would both write {name}; run them "
                                 "into different output folders")
