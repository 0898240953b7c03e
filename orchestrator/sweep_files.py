"""Reading sweep and include files: regular files of bounded size, UTF-8 text, YAML of bounded
shape (depth, nodes with aliases expanded, string keys), and no resolver in any value.

Nothing here builds a run spec; :mod:`orchestrator.sweep` does, from what this module accepts.
Every problem raises :class:`SpecError` naming the file and key.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

from orchestrator.errors import SpecError
from orchestrator.safe_output import describe_mode

UTF16_MARKS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
MAX_FILE_BYTES = 1 << 20
MAX_YAML_NODES = 10_000  # with aliases expanded (OmegaConf's own default limit)
MAX_YAML_DEPTH = 32
# control characters but tab and newlines
FORBIDDEN_IN_FILES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


def read_text(path: Path, referring_file: str, referring_key: str) -> str:
    """The text of a sweep or include file. Anything but a regular file of at most MAX_FILE_BYTES
    is refused before it is opened (a FIFO would block, /dev/zero never ends); so are bytes that
    are not UTF-8, NUL bytes and control characters other than tab and newline."""
    return _decoded(_read_regular_file(path, referring_file, referring_key), str(path))


def _read_regular_file(path: Path, referring_file: str, referring_key: str) -> bytes:
    def refuse(problem: str, found: Any, accepted: str = "a readable YAML file") -> SpecError:
        return SpecError(referring_file, referring_key, problem, found, accepted)

    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise refuse(
                "not a regular file",
                describe_mode(status.st_mode),
                "a YAML file (not a directory, FIFO or device)",
            )
        if status.st_size > MAX_FILE_BYTES:
            raise refuse(
                "file too large", f"{status.st_size} bytes", f"a YAML file of at most {MAX_FILE_BYTES} bytes"
            )
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced since os.stat
                raise refuse(
                    "not a regular file",
                    describe_mode(os.fstat(handle.fileno()).st_mode),
                    "a YAML file (not a directory, FIFO or device)",
                )
            data = handle.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise refuse("file not found", str(path), "an existing YAML file") from None
    except PermissionError:
        raise refuse("permission denied", str(path), "a YAML file this user may read") from None
    except OSError as error:
        raise refuse("cannot read the file", f"{path}: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES:  # /proc files say they are empty
        raise refuse(
            "file too large",
            f"more than {MAX_FILE_BYTES} bytes",
            f"a YAML file of at most {MAX_FILE_BYTES} bytes",
        )
    return data


def _decoded(data: bytes, file: str) -> str:
    utf8 = "a YAML file saved as UTF-8"
    if data.startswith(UTF16_MARKS):
        raise SpecError(file, "(file)", "not UTF-8 text", "a UTF-16 byte order mark", utf8)
    nul = data.find(b"\0")
    if nul >= 0:
        raise SpecError(
            file,
            "(file)",
            "a NUL byte",
            f"at {_line_and_column(data, nul)}",
            f"text without NUL bytes, {utf8}",
        )
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise SpecError(
            file,
            "(file)",
            "not UTF-8 text",
            f"byte 0x{data[error.start]:02x} at {_line_and_column(data, error.start)}",
            utf8,
        ) from None
    control = FORBIDDEN_IN_FILES.search(text)
    if control is not None:
        accepted = (
            "text without control characters other than tab and newline (a value that needs one: an escape "
            'such as "\\e" in double quotes)'
        )
        raise SpecError(
            file,
            "(file)",
            "a control character",
            f"U+{ord(control.group()):04X} at {_line_and_column(text, control.start())}",
            accepted,
        )
    return text


def _line_and_column(text: str | bytes, offset: int) -> str:
    newline: Any = b"\n" if isinstance(text, bytes) else "\n"
    line_start = text.rfind(newline, 0, offset) + 1
    return f"line {text.count(newline, 0, offset) + 1}, column {offset - line_start + 1}"


def parse_yaml_mapping(text: str, file: str) -> dict[str, Any]:
    """The mapping of a YAML document whose shape :class:`YamlShape` accepted."""
    root_kind = YamlShape(file).check(text)
    if root_kind not in ("a mapping", "empty"):
        raise SpecError(
            file, "(file)", "the file is not a mapping", root_kind, "a YAML mapping of keys to values"
        )
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=False)
    except Exception as error:  # duplicate keys, undefined aliases: with line and column
        raise SpecError(file, "(file)", "not valid YAML", str(error), "a YAML mapping") from None
    assert isinstance(loaded, dict)
    return loaded  # type: ignore[return-value]  # a YAML mapping's keys are str


@dataclass
class _Node:
    """A mapping or sequence being read, in :class:`YamlShape`."""

    path: str  # dotted key of this node ("" for the document)
    is_mapping: bool
    anchor: Optional[str]
    first_node: int  # YamlShape.nodes when it started
    children: int = 0  # mapping: keys and values
    key: str = ""  # mapping: the key whose value comes next


@dataclass
class YamlShape:
    """Checks a YAML document's shape from its parser events, before anything is built from it: at
    most MAX_YAML_DEPTH levels, at most MAX_YAML_NODES nodes with aliases expanded (a billion
    laughs stops at the first node too many), no alias inside the node it names, string keys."""

    file: str
    nodes: int = 0  # so far, aliases expanded
    aliases: int = 0
    open: list[_Node] = field(default_factory=list)
    anchor_nodes: dict[str, int] = field(default_factory=dict)  # expanded size of each anchored node
    root_kind: str = "empty"
    # the tag a plain scalar gets
    resolver: yaml.resolver.Resolver = field(default_factory=yaml.resolver.Resolver)

    def check(self, text: str) -> str:
        """What the document is ("a mapping", "a sequence", "a scalar" or "empty")."""
        try:
            for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                self.take(event)
        except yaml.YAMLError as error:  # syntax: with line and column
            raise SpecError(self.file, "(file)", "not valid YAML", str(error), "a YAML mapping") from None
        return self.root_kind

    def take(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1
        if isinstance(event, yaml.CollectionEndEvent):
            self.close()
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event.anchor, line)
        elif isinstance(event, yaml.ScalarEvent):
            self.scalar(event, line)
        elif isinstance(event, yaml.CollectionStartEvent):
            self.start(event, line)

    def scalar(self, event: yaml.ScalarEvent, line: int) -> None:
        self.child_path(None, event.value, event)
        self.count(1, line)
        if event.anchor is not None:
            self.anchor_nodes[event.anchor] = 1

    def alias(self, anchor: str, line: int) -> None:
        if any(node.anchor == anchor for node in self.open):
            raise SpecError(
                self.file,
                "(file)",
                "a recursive YAML alias",
                f"*{anchor} at line {line}",
                "aliases of complete nodes only (an alias inside the node it names never ends)",
            )
        self.child_path("an alias", anchor, None)
        self.aliases += 1
        self.count(self.anchor_nodes.get(anchor, 1), line)

    def start(self, event: yaml.CollectionStartEvent, line: int) -> None:
        is_mapping = isinstance(event, yaml.MappingStartEvent)
        path = self.child_path("a mapping" if is_mapping else "a sequence", "", None)
        if len(self.open) >= MAX_YAML_DEPTH:
            raise SpecError(
                self.file,
                "(file)",
                "YAML nested too deeply",
                f"more than {MAX_YAML_DEPTH} levels at line {line}",
                f"at most {MAX_YAML_DEPTH} levels of nesting",
            )
        self.count(1, line)
        self.open.append(_Node(path, is_mapping, event.anchor, self.nodes))

    def close(self) -> None:
        node = self.open.pop()
        if node.anchor is not None:
            self.anchor_nodes[node.anchor] = self.nodes - node.first_node + 1

    def count(self, nodes: int, line: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_YAML_NODES:
            problem = "YAML aliases expand to too many nodes" if self.aliases else "too many YAML nodes"
            accepted = (
                f"at most {MAX_YAML_NODES} YAML nodes, every alias (*name) counted as the node it names"
            )
            raise SpecError(
                self.file, "(file)", problem, f"more than {MAX_YAML_NODES} nodes by line {line}", accepted
            )

    def child_path(self, non_scalar: Optional[str], text: str, scalar: Optional[yaml.ScalarEvent]) -> str:
        """The dotted key of the node that starts now; refuses a key that is not a string."""
        if not self.open:
            self.root_kind = non_scalar or "a scalar"
            return ""
        parent = self.open[-1]
        parent.children += 1
        if not parent.is_mapping:
            return f"{parent.path}[{parent.children - 1}]"
        if parent.children % 2 == 1:  # a key
            self._check_key(parent, non_scalar, text, scalar)
            parent.key = text
            return ""
        return f"{parent.path}.{parent.key}" if parent.path else parent.key

    def _check_key(
        self, parent: _Node, non_scalar: Optional[str], text: str, scalar: Optional[yaml.ScalarEvent]
    ) -> None:
        accepted = "a string key: quote a key that YAML reads otherwise ('~', 'yes', '1')"
        prefix = f"{parent.path}." if parent.path else ""
        if non_scalar is not None:
            raise SpecError(
                self.file,
                f"{prefix}?",
                f"a key that is not a string ({non_scalar})",
                text or non_scalar,
                accepted,
            )
        assert scalar is not None
        tag = (
            scalar.tag
            if scalar.tag not in (None, "!")
            else self.resolver.resolve(yaml.ScalarNode, scalar.value, scalar.implicit)
        )
        if tag not in (_STRING_TAG, _MERGE_TAG):
            kind = tag.rsplit(":", 1)[-1]
            raise SpecError(
                self.file,
                f"{prefix}{text}",
                f"a key that is not a string (YAML reads it as {kind})",
                text,
                accepted,
            )


_STRING_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

RESOLVERS_ACCEPTED = (
    "${dotted.key} of another field, ${..key} relative to this one, or text without ${name:...} (resolvers "
    "such as oc.env, oc.decode, oc.create are refused)"
)


def check_no_resolvers(file: str, node: Any, key: str) -> None:
    """Refuse every string of a sweep or include file that calls a resolver (``${oc.env:X}``) or
    is no valid interpolation; plain interpolations of other keys (``${a.b}``, ``${..x}``) pass."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            check_no_resolvers(file, value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            check_no_resolvers(file, item, f"{key}[{index}]")
    elif isinstance(node, str) and "${" in node:
        problem = _interpolation_problem(node)
        if problem is not None:
            raise SpecError(file, key, problem, node, RESOLVERS_ACCEPTED)


def _interpolation_problem(text: str) -> Optional[str]:
    """Why ``text`` may not stand in a sweep (a resolver call, invalid syntax); None if it may."""
    try:
        pending = [grammar_parser.parse(text)]
    except (GrammarParseError, RecursionError):
        return "not a valid interpolation"
    while pending:  # every node of the parse tree
        node = pending.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            return "resolvers are not allowed"
        pending.extend(node.getChildren() if hasattr(node, "getChildren") else [])
    return None
