"""Small files with one job, thin commands: no module of incident/ over MAX_MODULE_LINES lines,
no click command body in incident/cli/ over MAX_COMMAND_LINES lines (its docstring, the --help
text, not counted). Read as text and parsed, never imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "incident"
MAX_MODULE_LINES = 500
MAX_COMMAND_LINES = 25

# Nothing is allowed over the bounds; an entry here would need its reason beside it.
LONG_MODULES_ALLOWED: set[str] = set()
LONG_COMMANDS_ALLOWED: set[tuple[str, str]] = set()


def module_lengths(package: Path) -> dict[str, int]:
    """Lines of every module under `package`, by path relative to it."""
    return {path.relative_to(package).as_posix(): len(path.read_text(encoding="utf-8")
                                                        .splitlines())
            for path in sorted(package.rglob("*.py"))}


def _is_click_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated by `<group or click>.command(...)` or `.group(...)`, called or not."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in {"command", "group"}:
            return True
    return False


def command_lengths(cli: Path) -> dict[tuple[str, str], int]:
    """Lines of the body of every click command or group under `cli`, without the docstring,
    by (path relative to the package, function name)."""
    lengths = {}
    for path in sorted(cli.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                    or not _is_click_command(node):
                continue
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0  # type: ignore[operator]
            lengths[(path.relative_to(cli.parent).as_posix(), node.name)] = lines
    return lengths


def test_the_measure_sees_every_command() -> None:
    # A bound that measures nothing cannot fail: the commands of the contract are all seen.
    found = {name for _path, name in command_lengths(PACKAGE / "cli")}

    assert {"start", "update", "resolve", "close", "deliver", "status", "verify", "failed",
            "init", "validate", "regulator", "report", "watch", "ingest"} <= found


def test_no_module_is_over_the_bound() -> None:
    over = {path: n for path, n in module_lengths(PACKAGE).items()
            if n > MAX_MODULE_LINES and path not in LONG_MODULES_ALLOWED}

    assert not over, (f"modules over {MAX_MODULE_LINES} lines (split them by job): {over}")


def test_no_command_body_is_over_the_bound() -> None:
    over = {f"{path}:{name}": n for (path, name), n in command_lengths(PACKAGE / "cli").items()
            if n > MAX_COMMAND_LINES and (path, name) not in LONG_COMMANDS_ALLOWED}

    assert not over, (f"command bodies over {MAX_COMMAND_LINES} lines (parse options, call one "
                      f"use case, render through small functions): {over}")
