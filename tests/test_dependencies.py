"""Everything the code and the tests import comes from what the project declares.

CI runs on a fresh machine with only what `.ci/run` installs: the project and its `dev` and
`postgres` extras in a plain venv. A module that is importable here only because it was installed
globally, or by hand, or that leaks in from the base interpreter's site-packages, would pass on a
developer's machine and fail there. These tests read every import in incident/, tests/ and bench/
and check that each third-party one is provided by a distribution in the closure of
pyproject.toml's declared requirements, and that the test interpreter is an isolated venv.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL = {"incident", "tests", "bench", "_common", "conftest"}
# venv's flag that shows a venv the base interpreter's packages, spelled in two parts so that
# the scan below does not find this file.
LEAKING_VENV_FLAG = "--system-site" + "-packages"


def _names(requirement: str) -> tuple[str, str]:
    """(normalised distribution name, marker) of a requirement string."""
    name = re.match(r"\s*([A-Za-z0-9_.-]+)", requirement)
    assert name, requirement
    marker = requirement.split(";", 1)[1] if ";" in requirement else ""
    return re.sub(r"[-_.]+", "-", name.group(1)).lower(), marker


def _declared_closure() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    roots = list(project["dependencies"])
    for extra in ("dev", "postgres"):
        roots += project["optional-dependencies"][extra]
    todo = [_names(r) for r in roots]
    seen: set[str] = set()
    while todo:
        name, marker = todo.pop()
        if name in seen or "win32" in marker:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a declared name not installed here fails the import check instead
        # Extras of a requirement ("psycopg[binary]") and unconditional requirements only;
        # "extra == ..." requirements come in through the extras named in the roots.
        todo += [_names(r) for r in requires if "extra ==" not in r]
        if name == "psycopg":
            todo.append(("psycopg-binary", ""))
    return seen


def _local_modules() -> set[str]:
    return {p.stem for folder in ("tests", "tests/faults", "bench")
            for p in (REPO / folder).glob("*.py")}


def _imports() -> dict[str, set[str]]:
    """Top-level module → the files importing it, over incident/, tests/ and bench/."""
    found: dict[str, set[str]] = {}
    for folder in ("incident", "tests", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(
                        str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    providers = metadata.packages_distributions()
    closure = _declared_closure()
    local = LOCAL | _local_modules()
    undeclared = {}
    for module, files in sorted(_imports().items()):
        if module in sys.stdlib_module_names or module in local:
            continue
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])}
        if not dists & closure:
            undeclared[module] = (sorted(dists) or ["not installed"], sorted(files)[:3])
    assert not undeclared, ("imported but not provided by pyproject.toml's dependencies or "
                            f"its dev/postgres extras: {undeclared}")


def test_the_tests_run_in_an_isolated_venv() -> None:
    # Not the base interpreter, and a venv that does not see the base interpreter's packages.
    assert sys.prefix != sys.base_prefix, "run the tests with .venv/bin/python (scripts/test.sh)"
    base = {p for p in sys.path if p.startswith(sys.base_prefix) and "site-packages" in p}
    assert not base, f"the base interpreter's site-packages are on sys.path: {base}"


def test_no_test_or_script_builds_a_venv_that_sees_global_packages() -> None:
    offenders = [str(p.relative_to(REPO)) for folder in ("tests", "bench", "scripts", ".ci")
                 for p in (REPO / folder).rglob("*") if p.is_file()
                 and p.suffix in {".py", ".sh", ""} and p.name != Path(__file__).name
                 and LEAKING_VENV_FLAG in p.read_text(errors="replace")]
    assert not offenders
