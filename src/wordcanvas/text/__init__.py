"""Text encoders behind one interface (TextEncoder -> TextEmbedding), an embedding cache, and
a trainable baseline. Heavy libraries (transformers) load only when an encoder is built."""
from wordcanvas.text.base import TextEmbedding, TextEncoder, validate_prompt
from wordcanvas.text.cache import CachedEncoder, EmbeddingCache
from wordcanvas.text.hf import HFEncoder, MiniLMEncoder, SmolLM2Encoder
from wordcanvas.text.registry import ENCODER_NAMES, ENCODERS, load_encoder, measure_encoder
from wordcanvas.text.trainable import TrainableEncoder, TrainableEncoderConfig

__all__ = [
    "TextEmbedding", "TextEncoder", "validate_prompt", "CachedEncoder", "EmbeddingCache", "HFEncoder",
    "MiniLMEncoder", "SmolLM2Encoder", "TrainableEncoder", "TrainableEncoderConfig", "ENCODER_NAMES", "ENCODERS",
    "load_encoder", "measure_encoder",
]
