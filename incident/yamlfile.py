"""Safe YAML loading into pydantic models, with errors naming file, line and field."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from incident.errors import BadInput, Location

M = TypeVar("M", bound=BaseModel)

# libyaml's parser when PyYAML has it (about ten times faster: incident.yaml and the playbook
# are read on the way to a start's first message); the same YAML, the same nodes and marks.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line_map(node: yaml.Node, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Yield (path, 1-based line) for every node of a composed YAML document."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            yield (*path, key), key_node.start_mark.line + 1
            for sub_path, line in _line_map(value_node, (*path, key)):
                if sub_path != (*path, key):
                    yield sub_path, line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _line_map(item, (*path, index))


# A playbook or incident.yaml has a few hundred nodes; an alias bomb ("billion laughs") has
# billions once its aliases are expanded, which the line map and validation would walk.
MAX_NODES = 100_000
_MERGE = "tag:yaml.org,2002:merge"


def _check_graph(root: yaml.Node, *, source: str, what: str, error: type[BadInput]) -> None:
    """Refuse a document whose aliases expand beyond MAX_NODES nodes, or with a key given
    twice in one mapping (YAML would silently keep the last one)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicates(node, source=source, what=what, error=error)
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        if total > MAX_NODES:
            raise error(f"{what} {source} expands to more than {MAX_NODES:,} values",
                        problems=[(Location(source, node.start_mark.line + 1),
                                   "aliases (*name) repeat this part too often; "
                                   "write the values out or use fewer aliases")])
        sizes[id(node)] = total
        return total

    size(root)


def _refuse_duplicates(node: yaml.MappingNode, *, source: str, what: str,
                       error: type[BadInput]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
            continue
        line = key_node.start_mark.line + 1
        first = seen.setdefault((key_node.tag, key_node.value), line)
        if first != line:
            raise error(f"{what} {source} gives the key {key_node.value!r} twice "
                        f"(lines {first} and {line})",
                        problems=[(Location(source, line, key_node.value),
                                   f"duplicate key: also at line {first}; keep one")])


def _locate(lines: dict[tuple[Any, ...], int], loc: Sequence[Any]) -> int | None:
    """Line of the deepest existing prefix of a pydantic error location."""
    path = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def parse_model(text: str, model: type[M], *, source: str, what: str,
                error: type[BadInput]) -> M:
    """Parse YAML `text` (safe loader) and validate it as `model`; raise `error` with locations."""
    try:
        return _parse_model(text, model, source=source, what=what, error=error)
    except RecursionError:
        # A recursive alias (`a: &x [*x]`) or thousands of nested brackets.
        raise error(f"{what} {source} is nested too deeply or refers to itself",
                    problems=[(Location(source), "remove the recursive alias or the "
                                                 "excess nesting")]) from None


def _parse_model(text: str, model: type[M], *, source: str, what: str,
                 error: type[BadInput]) -> M:
    loader = _SafeLoader(text)
    try:  # parsed once: the checks walk the nodes the data is then constructed from
        node = loader.get_single_node()
        data = None
        if node is not None:
            _check_graph(node, source=source, what=what, error=error)
            data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{what} {source} is not valid YAML",
                    problems=[(Location(source, line), str(problem))]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict) or node is None:
        raise error(f"{what} {source} must be a mapping of keys",
                    problems=[(Location(source, 1), "expected a mapping (key: value lines)")])
    lines = dict(_line_map(node))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or None
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (misspelt?)"
            problems.append((Location(source, _locate(lines, err["loc"]), field), message))
        raise error(f"{what} {source} has {len(problems)} error(s)", problems=problems) from None
