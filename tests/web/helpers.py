"""Helpers for the web tests: a small HTML tree (stdlib only) and database snapshots."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

from factories import DESIGN_DEFAULTS
from sqlalchemy import select

from portal.extensions import db

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Node | str] = []

    def get(self, name: str, default=None):
        value = self.attrs.get(name, default)
        return "" if value is None and name in self.attrs else value

    def has(self, name: str) -> bool:
        return name in self.attrs

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def iter(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs) -> list[Node]:
        """Descendants by tag and exact attribute values (`class_` matches one class)."""
        wanted_class = attrs.pop("class_", None)
        found = []
        for node in self.iter():
            if tag and node.tag != tag:
                continue
            if wanted_class and wanted_class not in node.classes:
                continue
            if all(node.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                found.append(node)
        return found

    def find(self, tag: str | None = None, **attrs) -> Node | None:
        found = self.find_all(tag, **attrs)
        return found[0] if found else None

    def one(self, tag: str | None = None, **attrs) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]

    def text(self) -> str:
        parts = []
        for child in self.children:
            parts.append(child if isinstance(child, str) else child.text())
        return " ".join(" ".join(parts).split())

    def ancestor(self, tag: str, class_: str | None = None) -> Node | None:
        node = self.parent
        while node is not None:
            if node.tag == tag and (class_ is None or class_ in node.classes):
                return node
            node = node.parent
        return None


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str | bytes) -> Node:
    if isinstance(html, bytes):
        html = html.decode()
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def page(response) -> Node:
    return parse(response.get_data(as_text=True))


def field_container(doc: Node, name: str) -> Node:
    """The `.field` box around the form control named `name`."""
    controls = [n for n in doc.iter() if n.tag in ("input", "select", "textarea")
                and n.get("name") == name]
    assert controls, f"no form control named {name!r}"
    box = controls[-1].ancestor("div", "field")
    assert box is not None, f"control {name!r} has no .field container"
    return box


def control(doc: Node, name: str) -> Node:
    found = [n for n in doc.iter() if n.tag in ("input", "select", "textarea")
             and n.get("name") == name and n.get("type") != "hidden"]
    assert len(found) == 1, f"expected one control named {name!r}, found {len(found)}"
    return found[0]


def field_error(doc: Node, name: str) -> str:
    """The error text shown inside the field's container ('' when none)."""
    box = field_container(doc, name)
    errors = box.find_all(class_="error")
    return " ".join(e.text() for e in errors)


def csrf_from_form(doc: Node) -> str:
    field = doc.find("input", name="csrf_token")
    assert field is not None, "the page has no csrf_token field"
    return field.get("value")


def csrf_from_body(doc: Node) -> str:
    body = doc.one("body")
    return json.loads(body.get("hx-headers"))["X-CSRFToken"]


def split_url(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query)


def location(response) -> tuple[str, dict[str, list[str]]]:
    """(path, query) of a redirect's Location."""
    return split_url(response.headers["Location"])


def snapshot() -> dict[str, list[tuple]]:
    """Every committed row of every table, read on a connection of its own."""
    state = {}
    with db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            state[table.name] = sorted((tuple(map(repr, row)) for row in rows))
    return state


def audit_actions() -> list[str]:
    with db.engine.connect() as conn:
        table = db.metadata.tables["audit_events"]
        return list(conn.execute(select(table.c.action).order_by(table.c.seq)).scalars())


def audit_events(action: str) -> list[dict]:
    with db.engine.connect() as conn:
        table = db.metadata.tables["audit_events"]
        rows = conn.execute(select(table).where(table.c.action == action)
                            .order_by(table.c.seq)).mappings().all()
        return [dict(row) for row in rows]


SETTINGS_DEFAULTS = {
    **DESIGN_DEFAULTS,
    "confirmation_message": "A technician is requesting to connect to this computer. "
                            "Do you want to allow the remote session?",
}


def settings_form(**overrides) -> dict[str, str]:
    """What a browser submits for the settings form: ticked boxes only, numbers as text."""
    values = {**SETTINGS_DEFAULTS, **overrides}
    data = {}
    for name, value in values.items():
        if value is True:
            data[name] = "y"
        elif value is False:
            continue
        else:
            data[name] = str(value)
    return data


HTMX = {"HX-Request": "true"}
