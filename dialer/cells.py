"""The one formula guard for every file a person may open in a spreadsheet (report CSVs, the rejects file).

Text from an input file (names, fields, a rejected row) is data, never a formula: CSV has no cell types, and
spreadsheet programs run a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return as a formula
(``=cmd|' /C calc'!A0``, ``@SUM(1;2)``). Following OWASP ("CSV injection"), such text cells get a leading single
quote (``'=1+2``). Text that is only a number (``+442037691880``, ``-3.5``) is left alone: it cannot run anything,
and phone numbers stay as they are. (XLSX exports write typed string cells, which no spreadsheet runs; SQLite
exports hold typed data.)
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FIRST = frozenset(FORMULA_START)
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d ]*(?:[.,]\d+)?")


def formula_safe(value: Any) -> Any:
    """``value`` for a spreadsheet cell: text a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def formula_safe_cells(cells: list[Any]) -> list[Any]:
    """``formula_safe`` over a column's cells (the cheap first-character test first: most need nothing)."""
    return [formula_safe(v) if isinstance(v, str) and v[:1] in _FIRST else v for v in cells]
