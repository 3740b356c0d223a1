"""Shared fixtures for the dicelab.study tests."""

from __future__ import annotations

# A real PostgreSQL server on loopback (session-scoped; skips with the reason where none can start).
from _study_postgres import fresh_postgres_url, postgres_server, postgres_url  # noqa: F401
