"""JUnit XML for CI: one test case per spec (and per level): CERTIFIED passes, VIOLATED and
UNKNOWN fail, REJECTED, bad input and internal errors are errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .files import atomic_open


def junit_xml(cases: list[dict], suite: str = "certify") -> str:
    """cases: {name, verdict, message, seconds, detail}. Returns the XML document."""
    failures = sum(c["verdict"] in ("VIOLATED", "UNKNOWN") for c in cases)
    errors = sum(c["verdict"] not in ("CERTIFIED", "VIOLATED", "UNKNOWN") for c in cases)
    total = sum(c.get("seconds", 0.0) for c in cases)
    root = ET.Element("testsuites", name=suite, tests=str(len(cases)), failures=str(failures), errors=str(errors),
                      time=f"{total:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                       errors=str(errors), skipped="0", time=f"{total:.3f}")
    for c in cases:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.check", name=c["name"], time=f"{c.get('seconds', 0.0):.3f}")
        if c["verdict"] in ("VIOLATED", "UNKNOWN"):
            ET.SubElement(tc, "failure", message=c["message"], type=c["verdict"]).text = c.get("detail", "")
        elif c["verdict"] != "CERTIFIED":
            ET.SubElement(tc, "error", message=c["message"], type=c["verdict"]).text = c.get("detail", "")
        ET.SubElement(tc, "system-out").text = c.get("detail", "")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, cases: list[dict]) -> None:
    """Atomically (temporary file, then rename)."""
    with atomic_open(path) as fh:
        fh.write(junit_xml(cases))
