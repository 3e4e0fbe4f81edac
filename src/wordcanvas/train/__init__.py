"""Training: one loop (`train`), a pure-data config (`TrainConfig`), and a step function per model family."""
from wordcanvas.train.config import TrainConfig, load_config
from wordcanvas.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]
