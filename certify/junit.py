"""JUnit XML for CI: one test case per spec (and per level), classified by `Status.junit`: CERTIFIED
passes, VIOLATED and UNKNOWN fail, REJECTED, bad input and internal errors are errors (their type is
the status's name, e.g. BAD_INPUT)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .files import atomic_open
from .status import Status


def junit_xml(cases: list[dict], suite: str = "certify") -> str:
    """cases: {name, status (a Status or its value), message, seconds, detail}. Returns the XML document."""
    statuses = [Status(c["status"]) for c in cases]
    failures = sum(s.junit == "failure" for s in statuses)
    errors = sum(s.junit == "error" for s in statuses)
    total = sum(c.get("seconds", 0.0) for c in cases)
    root = ET.Element("testsuites", name=suite, tests=str(len(cases)), failures=str(failures), errors=str(errors),
                      time=f"{total:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                       errors=str(errors), skipped="0", time=f"{total:.3f}")
    for c, status in zip(cases, statuses):
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.check", name=c["name"], time=f"{c.get('seconds', 0.0):.3f}")
        if status.junit != "pass":
            ET.SubElement(tc, status.junit, message=c["message"], type=status.name).text = c.get("detail", "")
        ET.SubElement(tc, "system-out").text = c.get("detail", "")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, cases: list[dict]) -> None:
    """Atomically (temporary file, then rename)."""
    with atomic_open(path) as fh:
        fh.write(junit_xml(cases))
