"""JUnit XML for CI: one test case per spec (and per level): CERTIFIED passes, VIOLATED and
UNKNOWN fail, REJECTED, bad input and internal errors are errors."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(junit_xml(cases))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
