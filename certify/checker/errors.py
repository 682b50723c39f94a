"""Errors of the trusted kernel. Each carries the one line a user reads.

`BadInput` (exit 2): the spec, a model, a data file or an argument is wrong. The message names
the file, the line where known, the key path, what is wrong and what to write instead.
`Rejected` (exit 3): a certificate failed a check. The message names the step and the reason.
"""

from __future__ import annotations


class BadInput(Exception):
    """Invalid user input: `file:line: key: what; fix`."""

    def __init__(self, file: str, key: str, what: str, fix: str, line: int | None = None):
        self.file, self.key, self.what, self.fix, self.line = str(file), key, what, fix, line
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {key}: {what}; {fix}" if key else f"{where}: {what}; {fix}")


def need(ok: object, file: str, key: str, what: str, fix: str, line: int | None = None) -> None:
    """A precondition of an input: unless `ok`, the one-line error `BadInput(file, key, what, fix, line)`."""
    if not ok:
        raise BadInput(file, key, what, fix, line)


class Rejected(Exception):
    """A certificate the checker refuses: `step: reason`."""

    def __init__(self, step: str, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"{step}: {reason}")


def require(ok: object, step: str, reason: str) -> None:
    """A condition on a certificate: unless `ok`, it is rejected at `step`."""
    if not ok:
        raise Rejected(step, reason)
