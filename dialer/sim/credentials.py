"""The simulator's public demo credentials, used when no ZADARMA_KEY / ZADARMA_SECRET are set.

They open nothing but a local simulator, so they are documented in the command help.
"""

from __future__ import annotations

DEMO_KEY = "0123456789abcdefdemo"
DEMO_SECRET = "demo0secret0simulatr"
DEFAULT_PORT = 8765
