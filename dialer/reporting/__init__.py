"""Reporting: the figures, the report frames and their renderings (terminal, CSV, XLSX, SQLite)."""
