"""Ingest: a CSV or XLSX list becomes campaign contacts (phone numbers normalised, zones and windows known)."""
