"""The configuration reference, generated from the schema and the config tree, so it cannot go
stale: every config group with its options (the files under configs/), and every key of every
node with its type, default and the comment beside it in schema.py. The docs site renders it
(docs/hooks/generated.py); `python -m training.config.reference` prints it."""

from __future__ import annotations

import ast
import dataclasses
import enum
import io
import tokenize
import typing
from pathlib import Path

from omegaconf import MISSING

from training.config import schema

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def group_options(root: Path = CONFIGS) -> dict[str, list[str]]:
    """Each config group and the options `group=option` can name (subfolders as `a/b`)."""
    groups = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        groups[folder.name] = sorted(
            str(f.relative_to(folder).with_suffix("")) for f in folder.rglob("*.yaml")
        )
    return groups


def _comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line, or the comment lines just above it."""
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            text = by_line.get(item.lineno)
            if text is None:  # a comment block right above the field
                above, n = [], item.lineno - 1
                while n >= 1 and lines[n - 1].strip().startswith("#"):
                    above.insert(0, by_line.get(n, ""))
                    n -= 1
                text = " ".join(above)
            out[(node.name, item.target.id)] = text
    return out


def _type_name(tp) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in tp)
    if dataclasses.is_dataclass(tp):
        return "node"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin is typing.Union and len(args) == 1:
        return _type_name(args[0]) + " or null"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
        if value == MISSING:
            return "set by its group"
        if isinstance(value, enum.Enum):
            value = value.value
        return "null" if value is None else f"`{value}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "node" if dataclasses.is_dataclass(value) else f"`{value}`"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def nodes() -> dict[str, type]:
    """Each node of the root config by its key (`model`, `rung`, ..., `trainer`)."""
    hints = typing.get_type_hints(schema.LadderConfig)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(schema.LadderConfig)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _node_rows(prefix: str, cls: type, comments: dict) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        rows.append(
            f"| `{prefix}.{f.name}` | {_type_name(tp)} | {_default(f)} | "
            f"{_cell(comments.get((cls.__name__, f.name), ''))} |"
        )
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(tp) or inner:
            rows += _node_rows(f"{prefix}.{f.name}", tp if not inner else inner[0], comments)
    return rows


def groups_markdown() -> str:
    lines = ["| group | options |", "| --- | --- |"]
    for group, options in group_options().items():
        lines.append(f"| `{group}` | {', '.join(f'`{o}`' for o in options)} |")
    return "\n".join(lines)


def keys_markdown() -> str:
    comments = _comments(Path(schema.__file__).read_text())
    out = []
    for key, cls in nodes().items():
        doc = (cls.__doc__ or "").strip()
        out += [f"### `{key}`", ""]
        if doc and not doc.startswith(cls.__name__ + "("):
            out += [" ".join(doc.split()), ""]
        out += ["| key | type | default | what it is |", "| --- | --- | --- | --- |"]
        out += _node_rows(key, cls, comments) + [""]
    return "\n".join(out)


if __name__ == "__main__":
    print("## Config groups\n\n" + groups_markdown() + "\n\n## Keys\n\n" + keys_markdown())
