"""Super-resolution: the upscaling API with tiled inference, the Real-ESRGAN and SRMD converters, training patches."""
from wordcanvas.sr.ncnn import NcnnFormatError, load_realesrgan, load_srmd
from wordcanvas.sr.upscale import DEFAULT_MAX_PIXELS, METHODS, ImageLoadError, Upscaler, load_image, tiled_apply

__all__ = ["Upscaler", "load_image", "ImageLoadError", "tiled_apply", "load_realesrgan", "load_srmd", "NcnnFormatError",
           "DEFAULT_MAX_PIXELS", "METHODS"]
