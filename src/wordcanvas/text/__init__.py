from wordcanvas.text.base import TextEmbedding, TextEncoder

__all__ = ["TextEmbedding", "TextEncoder"]
