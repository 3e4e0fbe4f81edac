"""Inputs that cannot hurt: hostile or odd image files and prompts are converted or refused with a
clear message, never crash elsewhere (fuzzed with hypothesis)."""
from __future__ import annotations

import io
import struct
import unicodedata
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from wordcanvas.text.base import MAX_PROMPT_CHARS, validate_prompt
from wordcanvas.utils.images import ImageLoadError, load_rgb, open_image, to_rgb

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header announcing width x height, with one tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def gradient(w: int = 12, h: int = 8) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
    a[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    a[..., 2] = 90
    return Image.fromarray(a)


# --- images ---------------------------------------------------------------------------------------

def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))  # 10 gigapixels announced in 150 bytes
    with pytest.raises(ImageLoadError, match=r"bomb.png: .*decompression bomb"):
        open_image(bomb)
    with pytest.raises(ImageLoadError, match=r"3000x3000 = 9,000,000 pixels is above the limit of 1,000,000"):
        open_image(png_header_only(3000, 3000), max_pixels=1_000_000)
    with pytest.raises(ImageLoadError, match="above the limit of 100"):
        open_image(encoded(gradient(16, 16), "PNG"), max_pixels=100)


def test_truncated_and_mislabelled_files(tmp_path):
    png, jpeg = encoded(gradient(64, 64), "PNG"), encoded(gradient(64, 64), "JPEG", quality=90)
    for name, data in (("cut.png", png[: len(png) // 2]), ("cut.jpg", jpeg[: len(jpeg) // 2])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageLoadError, match=f"{name}: corrupt or truncated image"):
            open_image(tmp_path / name)
    (tmp_path / "really-a-png.jpg").write_bytes(png)  # the content decides, not the extension
    assert np.array_equal(load_rgb(tmp_path / "really-a-png.jpg"), np.asarray(gradient(64, 64)))
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(ImageLoadError, match="notes.png: not an image file"):
        open_image(tmp_path / "notes.png")
    with pytest.raises(ImageLoadError, match="no such file"):
        open_image(tmp_path / "absent.png")


def test_modes_are_converted_to_8bit_rgb():
    # 16-bit grey: 65535 -> 255, 32768 -> 128 (scaled, not clipped)
    grey16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert load_rgb(encoded(grey16, "PNG"))[0, :, 0].tolist() == [0, 128, 255]
    # CMYK: pure cyan ink is RGB (0, 255, 255)
    cmyk = Image.new("CMYK", (4, 4), (255, 0, 0, 0))
    assert load_rgb(encoded(cmyk, "JPEG", quality=100))[1, 1].tolist() == pytest.approx([0, 255, 255], abs=3)
    # palette with a transparent index, and RGBA / LA alpha: composited on white
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    rgb = load_rgb(encoded(pal, "PNG", transparency=1))
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]
    rgba = Image.new("RGBA", (2, 1), (0, 0, 255, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    assert load_rgb(encoded(rgba, "PNG"))[0].tolist() == [[255, 255, 255], [0, 0, 255]]
    la = Image.new("LA", (1, 1), (0, 128))
    assert load_rgb(encoded(la, "PNG"))[0, 0].tolist() == pytest.approx([127, 127, 127], abs=1)
    # 1-bit and float images
    assert load_rgb(encoded(Image.new("1", (3, 3), 1), "PNG")).min() == 255
    flt = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert load_rgb(encoded(flt, "TIFF"))[0, :, 0].tolist() == [0, 128, 255]
    for mode_image in (grey16, cmyk, pal, rgba, la, flt):
        assert to_rgb(mode_image).mode == "RGB"


def test_exif_orientation_is_applied():
    img = gradient(12, 8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    turned = load_rgb(encoded(img, "JPEG", quality=95, subsampling=0, exif=exif.tobytes())).astype(int)
    assert turned.shape == (12, 8, 3)
    clockwise = np.asarray(img.transpose(Image.Transpose.ROTATE_270))
    anticlockwise = np.asarray(img.transpose(Image.Transpose.ROTATE_90))
    assert np.abs(turned - clockwise).mean() < 6 < np.abs(turned - anticlockwise).mean()  # JPEG round trip


def test_caption_folder_loads_odd_images_through_the_same_path(tmp_path):
    from wordcanvas.data.folder import CaptionFolder

    cases = {"grey16.png": Image.fromarray(np.full((8, 8), 40000, np.uint16)),
             "cmyk.jpg": Image.new("CMYK", (8, 8), (0, 255, 0, 0)),
             "palette.gif": gradient(8, 8).convert("P"),
             "alpha.png": Image.new("RGBA", (8, 8), (255, 0, 0, 128))}
    for name, image in cases.items():
        image.save(tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text(f"caption of {name}\n")
    (tmp_path / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    (tmp_path / "bomb.txt").write_text("boom\n")
    (tmp_path / "palette.gif").rename(tmp_path / "palette.png")  # a GIF with a .png name
    (tmp_path / "palette.txt").write_text("a palette picture\n")
    with pytest.warns(UserWarning, match="bomb.png"):
        ds = CaptionFolder(tmp_path, resolution=8, progress=False)
    assert dict(ds.skipped)["bomb.png"].startswith("refused as a decompression bomb")
    assert len(ds) == 4
    for i in range(len(ds)):
        x = ds.image(i)
        assert x.shape == (3, 8, 8) and bool(x.isfinite().all()) and x.min() >= -1 and x.max() <= 1


def test_edit_and_style_loaders_share_the_checked_path(tmp_path):
    from wordcanvas.edit import load_image
    from wordcanvas.style.data import _load_folder

    Image.new("RGBA", (10, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # transparent: composited on white
    (tmp_path / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    (tmp_path / "cut.jpg").write_bytes(encoded(gradient(), "JPEG")[:40])
    x = load_image(tmp_path / "clear.png", channels=3, resolution=4)
    assert x.shape == (1, 3, 4, 4) and torch.allclose(x, torch.ones_like(x))
    for bad in ("bomb.png", "cut.jpg"):
        with pytest.raises(ImageLoadError, match=bad):
            load_image(tmp_path / bad, channels=1, resolution=4)
    with pytest.warns(UserWarning, match="bomb.png"):
        photos = _load_folder(tmp_path)
    assert sorted(photos) == ["clear.png"]


def valid_images() -> list[bytes]:
    img = gradient(16, 16)
    return [encoded(img, "PNG"), encoded(img, "JPEG"), encoded(img.convert("P"), "GIF"), encoded(img, "BMP"),
            encoded(img, "TIFF"), encoded(img, "WEBP")]


@FUZZ
@given(base=st.sampled_from(valid_images()), cut=st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=4))
def test_fuzz_damaged_images_load_or_fail_with_image_load_error(base, cut, flips):
    data = bytearray(base[: max(1, len(base) - cut)] if cut % 3 == 0 else base)
    for at, xor in flips:
        data[at % len(data)] ^= xor
    try:
        array = load_rgb(bytes(data), max_pixels=1 << 20)
    except ImageLoadError:
        return
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_are_refused_cleanly(data):
    try:
        load_rgb(data, max_pixels=1 << 20)
    except ImageLoadError:
        pass


# --- prompts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, expected", [
    ("  a red\tsquare \n", "a red square"),
    ("a\x00b\x1bc\x7f d", "a b c d"),                       # control characters
    ("zero\u200bwidth", "zero width"),                      # format characters
    ("caf\u0065\u0301", "caf\u00e9"),                       # NFC
    ("猫の絵 — кошка, قطة", "猫の絵 — кошка, قطة"),           # non-Latin scripts
    ("a cat 🐱 and 👨\u200d👩\u200d👧", "a cat 🐱 and 👨\u200d👩\u200d👧"),  # emoji, ZWJ sequences intact
    (b"caf\xc3\xa9 au lait", "café au lait"),               # UTF-8 bytes
])
def test_prompts_are_normalised(prompt, expected):
    assert validate_prompt(prompt) == expected


@pytest.mark.parametrize("prompt, message", [
    ("", "empty"), ("   \n\t ", "empty"), ("\x00\x01\x02", "empty"), ("\u200d\u200d", "no visible"),
    ("x" * 100_000, "100000 characters; the limit is 2000"), ("y " * 1001, "2001 characters"),
    (b"bad \xff\xfe bytes", "not valid UTF-8: byte 0xff at position 4"), ("\ud800", "empty"),
])
def test_bad_prompts_are_refused_clearly(prompt, message):
    with pytest.raises(ValueError, match=message):
        validate_prompt(prompt)
    with pytest.raises(TypeError, match="must be a string"):
        validate_prompt(None)


ANY_CHAR = st.characters(codec=None, exclude_categories=())  # surrogates and control characters included


def check_clean(out: str) -> None:
    assert out and out == out.strip() and len(out) <= MAX_PROMPT_CHARS
    assert all(ch.isprintable() or ch in (" ", "\u200d") for ch in out)
    assert "  " not in out and out == unicodedata.normalize("NFC", out)


@FUZZ
@given(st.one_of(st.text(ANY_CHAR, max_size=60), st.text(ANY_CHAR, min_size=1990, max_size=2100),
                 st.binary(max_size=60)))
def test_fuzz_validate_prompt_normalises_or_refuses(text):
    try:
        out = validate_prompt(text)
    except ValueError:
        return
    check_clean(out)
    assert validate_prompt(out) == out  # idempotent


@pytest.fixture(scope="module")
def trainable_encoder():
    from wordcanvas.text.trainable import TrainableEncoder

    return TrainableEncoder.build(["a red square", "a blue circle", "a red circle"], min_count=1, dim=16, depth=1,
                                  heads=2, max_tokens=8)


@pytest.fixture(scope="module")
def minilm():
    from wordcanvas.text.hf import MiniLMEncoder

    return MiniLMEncoder(max_tokens=16)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.text(ANY_CHAR, min_size=1, max_size=80))
def test_fuzz_encoders_accept_every_valid_prompt(trainable_encoder, minilm, text):
    try:
        prompt = validate_prompt(text)
    except ValueError:
        return
    for encoder in (trainable_encoder, minilm):
        emb = encoder.encode([prompt, "a red square"])
        assert emb.tokens.shape == (2, encoder.max_tokens, encoder.dim) and emb.pooled.shape == (2, encoder.dim)
        assert bool(emb.pooled.isfinite().all()) and bool(emb.mask[:, 0].all())
    with pytest.raises(ValueError):
        trainable_encoder.encode([prompt, "\x00"])  # one bad prompt refuses the whole batch
