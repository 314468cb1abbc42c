"""Layout rules of docs/developer.rst: module sizes, private/public line, step list, module map."""

import ast
import re
from pathlib import Path

import pytest

from jwst_klipprep.integration import STEPS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jwst_klipprep"
MAX_ALGORITHM_LINES = 500
#: Modules of algorithms/ allowed above the limit, with the most lines they may have.  Only
#: shrink this: centering.py is being edited on another branch this round.
OVERSIZED = {"centering.py": 505}
#: Private names still used from outside the package ("path: module.name"): only remove entries.
#: Their files are being edited on another branch this round (psf/, bench_recenter.py); the
#: psf branch drops ``_psf_cached``.
PRIVATE_USES = set()  # "file: module.name" allowed exceptions (none at present)


def _modules():
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


def _is_private(dotted):
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def private_uses(path):
    """``module.name`` strings of the private modules and names that ``path`` imports or uses."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, bound = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "jwst_klipprep" or node.module.startswith("jwst_klipprep.")):
            if _is_private(node.module):
                found.add(node.module)
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_private(alias.name):
                    found.add(full)
                bound[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "jwst_klipprep":
                    if _is_private(alias.name):
                        found.add(alias.name)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound["jwst_klipprep"] = "jwst_klipprep"
    for node in ast.walk(tree):  # module._name on an imported jwst_klipprep name
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                found.add(".".join([bound[value.id], *reversed(chain)]))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # monkeypatch paths
            for match in re.findall(r"\bjwst_klipprep(?:\.\w+)+", node.value):
                if _is_private(match):
                    found.add(match)
    return found


@pytest.mark.parametrize("module", [m for m in _modules() if m.startswith("algorithms/")])
def test_algorithm_modules_stay_small(module):
    n = len((PACKAGE / module).read_text().splitlines())
    limit = OVERSIZED.get(Path(module).name, MAX_ALGORITHM_LINES)
    assert n <= limit, f"jwst_klipprep/{module} has {n} lines (at most {limit}): split it"


def _outside_files():
    files = [*ROOT.joinpath("tests").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py"),
             PACKAGE / "demo.py"]
    return sorted(p.relative_to(ROOT).as_posix() for p in files
                  if p != Path(__file__).resolve())  # this file names private modules on purpose


def test_tests_benchmarks_and_demo_use_only_public_names():
    uses = {f"{path}: {name}" for path in _outside_files()
            for name in private_uses(ROOT / path)}
    assert uses - PRIVATE_USES == set(), "private modules or names used outside the package"


def test_private_use_detector_finds_each_form(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text(
        "import jwst_klipprep._offline\n"
        "from jwst_klipprep.simulate import _scene\n"
        "from jwst_klipprep.batch.runner import _slow_exit, run_batch\n"
        "from jwst_klipprep.psf import builtin\n"
        "import jwst_klipprep.keywords as kw\n"
        "builtin._psf_cached.cache_info()\n"
        "kw._get_keyword\n"
        "kw.get_center_yx\n"
        "patch = 'jwst_klipprep.outputs._pid_alive'\n"
    )
    assert private_uses(src) == {
        "jwst_klipprep._offline",
        "jwst_klipprep.simulate._scene",
        "jwst_klipprep.batch.runner._slow_exit",
        "jwst_klipprep.psf.builtin._psf_cached",
        "jwst_klipprep.keywords._get_keyword",
        "jwst_klipprep.outputs._pid_alive",
    }


#: Layers of docs/developer.rst, bottom up (first matching prefix); a module imports only from
#: its own layer or below.
LAYERS = (
    ("algorithms",),
    ("psf",),
    ("_offline", "integration", "datamodel_arrays", "keywords", "geometry", "provenance", "roles",
     "transmission", "reference_data", "validation", "outputs"),
    ("base",),
    ("steps",),
    ("pipeline", "consumers", "diagnostics"),
    ("cli", "batch", "demo", "simulate"),
)


def _layer(module):
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"jwst_klipprep.{module} is in no layer of docs/developer.rst")


def _package_imports(path):
    """Modules of the package (dotted, without ``jwst_klipprep.``) that ``path`` imports."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    package = list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("jwst_klipprep."):
                module = node.module.removeprefix("jwst_klipprep.")
            else:
                continue
            if module:
                out.add(module)
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("jwst_klipprep.") for a in node.names
                    if a.name.startswith("jwst_klipprep.")}
    return out


def test_imports_follow_the_layers():
    backwards = []
    for module in _modules():
        src = module.removesuffix(".py").replace("/", ".")
        if src == "__init__":
            continue
        for target in _package_imports(PACKAGE / module):
            if _layer(target) > _layer(src):
                backwards.append(f"{src} -> {target}")
    assert backwards == []
    assert _layer("steps.pad_frames_step") > _layer("algorithms.padding")  # the check can fail


def test_integration_lists_every_step_module():
    listed = {class_path.rsplit(".", 1)[0] for class_path, *_ in STEPS}
    on_disk = {"jwst_klipprep." + m.removesuffix(".py").replace("/", ".") for m in _modules()
               if re.fullmatch(r"steps/\w+_step\.py", m)}
    on_disk.add("jwst_klipprep.pipeline.klipprep_pipeline")
    assert listed == on_disk
    aliases = [alias for _, alias, *_ in STEPS]
    assert len(set(aliases)) == len(aliases)
    for class_path, alias, _, is_pipeline in STEPS:
        if not is_pipeline:
            assert class_path.startswith(f"jwst_klipprep.steps.{alias}_step.")


def test_developer_map_names_every_module():
    text = (ROOT / "docs" / "developer.rst").read_text()
    missing = [m for m in _modules() if f"``{m}``" not in text]
    assert missing == [], f"docs/developer.rst: add a line for {missing}"
