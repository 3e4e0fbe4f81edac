"""CLI verbs (see commands/__init__.py)."""
from __future__ import annotations

VERBS: dict = {}
