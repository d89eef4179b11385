"""YAML from users, read without aliases.

``yaml.safe_load`` constructs only plain types, but it still follows aliases: a few hundred
bytes of nested ``&a [*b, *b, ...]`` anchors (a "billion laughs" document) expand into
billions of references that every consumer walking the data pays for in time and memory.
No file we read (BAH ``annotation.yml``, parameters files, training configs, rosbag2
``metadata.yaml``) needs aliases, so a document that uses one is refused before anything
is constructed; ROS 2 itself refuses them in parameters files (``rcl_yaml_param_parser``,
``src/parse.c``: "Will not support aliasing at line N"). PyYAML's composer hands out the
anchored node object itself for each alias (``yaml.composer.Composer.compose_node`` and
its C twin in ``_yaml.pyx``), so a node reached twice in the composed graph is exactly an
alias; the check is one walk over the nodes and works with the fast C loader. The same walk refuses a mapping that names a key twice,
which ``safe_load`` resolves silently by keeping the last value (a video of an annotation
file, a parameter, lost without a word).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlAliasError(yaml.YAMLError):
    """The document uses an alias (``*name``); the message says where."""


class YamlDuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice; the message says where."""


def _loader_class() -> type:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line(node: yaml.Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def _refuse_aliases(root: yaml.Node, source: str) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            mark = node.start_mark
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            raise YamlAliasError(f"{where}: the node starting here is repeated through a YAML alias "
                                 f"(*name); aliases are not accepted: write the values out in full")
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int | None] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if (key.tag, key.value) in first:
                        raise YamlDuplicateKeyError(
                            f"{source}:{_line(key)}: key {key.value!r} appears a second time in this "
                            f"mapping (first at line {first[(key.tag, key.value)]}): only one may be given")
                    first[(key.tag, key.value)] = _line(key)
                stack.extend((key, value))


def safe_load_text(text: str, source: str = "<yaml>") -> Any:
    """Like ``yaml.safe_load(text)``, refusing aliases (:class:`YamlAliasError`) and
    repeated keys (:class:`YamlDuplicateKeyError`).
    ``source`` names the text in the error (a file name)."""
    return safe_load_with_nodes(text, source)[0]


def safe_load_with_nodes(text: str, source: str = "<yaml>") -> tuple[Any, yaml.Node | None]:
    """:func:`safe_load_text` and the composed node tree, whose ``start_mark`` gives the
    line of every value (for error messages that name it)."""
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _refuse_aliases(node, source)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def safe_load_file(path: str | Path) -> Any:
    """:func:`safe_load_text` of a UTF-8 file; undecodable bytes raise ``yaml.YAMLError``
    naming the file and line."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise yaml.YAMLError(f"{path}:{line}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not "
                             f"UTF-8 text") from None
    return safe_load_text(text, str(path))
