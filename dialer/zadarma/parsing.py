"""Turn Zadarma's JSON or XML bodies into the same plain Python structure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any


class BodyError(ValueError):
    """The body could not be read as the format asked for."""


def parse_body(text: str, fmt: str) -> dict[str, Any]:
    if fmt == "xml":
        return parse_xml(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BodyError(f"response is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BodyError("response JSON is not an object")
    return data


def parse_xml(text: str) -> dict[str, Any]:
    try:
        root = ET.fromstring(text.strip().encode())
    except ET.ParseError as exc:
        raise BodyError(f"response is not XML: {exc}") from None
    value = _element(root)
    if not isinstance(value, dict):
        # <answer/> with only text is not something Zadarma sends; keep the text for the error message.
        return {"status": "error", "message": str(value)}
    return value


def _element(el: ET.Element) -> Any:
    children = list(el)
    if not children:
        return el.text or ""
    if all(child.tag == "value" for child in children):
        return [_element(child) for child in children]
    out: dict[str, Any] = {}
    for child in children:
        item = _element(child)
        if child.tag in out:
            # Repeated non-<value> tags: keep them all rather than silently dropping data.
            prev = out[child.tag]
            out[child.tag] = [*prev, item] if isinstance(prev, list) else [prev, item]
        else:
            out[child.tag] = item
    return out


def to_xml(data: dict[str, Any]) -> str:
    """The inverse, as Zadarma writes it (used by the simulator)."""
    root = ET.Element("answer")
    for key, value in data.items():
        _append(root, key, value)
    return '<?xml version="1.0"?>' + ET.tostring(root, encoding="unicode")


def _append(parent: ET.Element, tag: str, value: Any) -> None:
    el = ET.SubElement(parent, tag)
    if isinstance(value, dict):
        for key, item in value.items():
            _append(el, key, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _append(el, "value", item)
    elif value is None:
        el.text = ""
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    else:
        el.text = str(value)
