"""wordcanvas: text to image with a pretrained language model and a text-conditioned GAN or VAE."""

__version__ = "0.1.0"
