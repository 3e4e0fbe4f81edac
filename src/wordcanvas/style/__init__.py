"""Arbitrary style transfer: AdaIN with a trained decoder, or Gatys-style optimisation, on VGG16.

    from wordcanvas.style import Stylizer
    Stylizer.from_pretrained().stylize(photo, [painting], alpha=0.8, preserve_color=True)

Heavy modules load on first use.
"""
from __future__ import annotations

__all__ = ["Stylizer", "METHODS", "HELDOUT_CONTENT", "HELDOUT_STYLES"]


def __getattr__(name: str):
    if name in ("Stylizer", "METHODS"):
        from wordcanvas.style import transfer

        return getattr(transfer, name)
    if name in ("HELDOUT_CONTENT", "HELDOUT_STYLES"):
        from wordcanvas.style import data

        return getattr(data, name)
    raise AttributeError(f"module 'wordcanvas.style' has no attribute {name!r}")
