"""Fuzz cases run so far in this session, by kind (the conftest prints them at the end)."""

COUNTS = {"reader": 0, "cli": 0, "cli_subprocess": 0}
