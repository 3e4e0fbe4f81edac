"""CLI verbs. Each module exposes VERBS: name -> (add_arguments, run, help). Explicit imports, no auto-registry."""
from __future__ import annotations

from wordcanvas.commands import data_cmd, demo_cmd, metrics_cmd, sr_cmd, style_cmd, text_cmd, train_cmd, vae_cmd

VERBS: dict = {}
for _module in (text_cmd, data_cmd, metrics_cmd, train_cmd, sr_cmd, style_cmd, demo_cmd, vae_cmd):
    VERBS.update(_module.VERBS)

from wordcanvas.commands import serve_cmd  # noqa: E402  (serve, export)
VERBS.update(serve_cmd.VERBS)
