"""Datasets, registry, loader and preview CLI. Captions are checked against labels by keyword
parsers written here, independently of the templates in the dataset modules."""
from __future__ import annotations

import gzip
import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from wordcanvas import assets
from wordcanvas.cli import main
from wordcanvas.data import DATASET_NAMES, default_resolution, load_dataset
from wordcanvas.data.captioned_mnist import CaptionedMNIST
from wordcanvas.data.fashion_mnist import FashionMNIST
from wordcanvas.data.folder import CaptionFolder
from wordcanvas.data.loader import make_loader


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9'-]+", text.lower()))


# ---------------------------------------------------------------- Fashion-MNIST

FASHION_KEYWORDS = [  # (keyword, class); first match wins, so "t-shirt" precedes "shirt"
    ("t-shirt", 0), ("top", 0), ("trousers", 1), ("pullover", 2), ("sweater", 2), ("dress", 3), ("coat", 4),
    ("sandal", 5), ("shirt", 6), ("sneaker", 7), ("handbag", 8), ("bag", 8), ("boot", 9),
    # held-out paraphrases
    ("tee", 0), ("singlet", 0), ("pants", 1), ("slacks", 1), ("jumper", 2), ("jersey", 2), ("frock", 3),
    ("gown", 3), ("overcoat", 4), ("parka", 4), ("flip-flop", 5), ("footwear", 5), ("blouse", 6),
    ("button-down", 6), ("trainer", 7), ("running shoe", 7), ("purse", 8), ("tote", 8), ("bootie", 9),
]


def fashion_class(caption: str) -> int:
    found = [k for key, k in FASHION_KEYWORDS if re.search(rf"(?<![\w-]){re.escape(key)}", caption)]
    assert found, caption
    return found[0]


@pytest.fixture(scope="module")
def fashion():
    return FashionMNIST("train", resolution=32)


def test_fashion_images_match_the_idx_files(fashion):
    raw = gzip.open(assets.fashion_mnist_dir() / "train-images-idx3-ubyte.gz").read()
    first = np.frombuffer(raw[16 : 16 + 5 * 784], dtype=np.uint8).reshape(5, 28, 28)
    targets = np.frombuffer(gzip.open(assets.fashion_mnist_dir() / "train-labels-idx1-ubyte.gz").read()[8:13], np.uint8)
    assert len(fashion) == 60_000 and len(FashionMNIST("test")) == 10_000
    for i in range(5):
        item = fashion[i]
        x = item["image"]
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        assert torch.all(x[:, :2] == -1) and torch.all(x[:, :, -2:] == -1)  # 2 px black padding
        expected = torch.from_numpy(first[i].astype(np.float32)) / 127.5 - 1
        assert torch.allclose(x[0, 2:30, 2:30], expected)
        assert item["labels"] == {"class": int(targets[i])}
    big = FashionMNIST("train", resolution=64)[0]["image"]
    assert big.shape == (1, 64, 64) and big.min() >= -1 and big.max() <= 1


def test_fashion_captions_name_the_labelled_class(fashion):
    for i in range(0, 60_000, 211):
        item = fashion[i]
        assert fashion_class(item["caption"]) == item["labels"]["class"], item
    for k in range(10):
        i = int(np.flatnonzero(fashion.targets == k)[0])
        assert {fashion_class(c) for c in fashion.captions(i)} == {k}


def test_fashion_heldout_prompts_are_unseen_paraphrases(fashion):
    train_caps = {c for k in range(10) for c in fashion.captions(int(np.flatnonzero(fashion.targets == k)[0]))}
    train_vocab = set().union(*(words(c) for c in train_caps))
    for heldout in (False, True):
        prompts = fashion.eval_prompts(50, seed=3, heldout=heldout)
        assert np.bincount([p.labels["class"] for p in prompts], minlength=10).tolist() == [5] * 10
        for p in prompts:
            assert fashion_class(p.text) == p.labels["class"]
            assert (p.text in train_caps) != heldout
            if heldout:  # a new word, not just a new combination
                assert words(p.text) - train_vocab, p.text
    assert [p.text for p in fashion.eval_prompts(20, seed=1)] == [p.text for p in fashion.eval_prompts(20, seed=1)]


# ---------------------------------------------------------------- captioned MNIST

NUMBERS = {w: d for d, w in enumerate("zero one two three four five six seven eight nine".split())}


def parse_cell(phrase: str) -> int:
    row = 0 if re.search(r"\b(top|upper)\b", phrase) else 2 if re.search(r"\b(bottom|lower)\b", phrase) else 1
    col = 0 if re.search(r"\bleft", phrase) else 2 if re.search(r"\bright", phrase) else 1
    return 3 * row + col


def parse_relation(phrase: str) -> tuple[int, int]:
    up, down = re.search(r"\b(top|above|up|higher)\b", phrase), re.search(r"\b(bottom|below|down|lower)\b", phrase)
    dy = -1 if up else 1 if down else 0
    dx = -1 if re.search(r"\bleft", phrase) else 1 if re.search(r"\bright", phrase) else 0
    return dy, dx


def cell_relation(a: int, b: int) -> tuple[int, int]:
    (ra, ca), (rb, cb) = divmod(a, 3), divmod(b, 3)
    return int(np.sign(ra - rb)), int(np.sign(ca - cb))


DIGIT = r"(\d|zero|one|two|three|four|five|six|seven|eight|nine)"


def digit_value(token: str) -> int:
    return int(token) if token.isdigit() else NUMBERS[token]


def parse_mnist_caption(text: str) -> dict:
    """{'single': (d, cell)} | {'absolute': {(d, cell), ...}} | {'relation': (a, b, (dy, dx))}."""
    tokens = re.findall(rf"(?<![\w-]){DIGIT}(?![\w-])", text)
    if len(tokens) == 1:
        return {"single": (digit_value(tokens[0]), parse_cell(text.split(tokens[0], 1)[1]))}
    parts = re.split(r" (?:and|plus) ", text)
    if len(parts) == 2 and all(re.match(rf"an? {DIGIT} ", p) for p in parts):
        out = set()
        for part in parts:
            token = re.search(rf"(?<![\w-]){DIGIT}(?![\w-])", part).group(1)
            out.add((digit_value(token), parse_cell(part.split(token, 1)[1])))
        return {"absolute": out}
    m = re.search(rf"(?<![\w-]){DIGIT}(?![\w-])(.*?)(?<![\w-]){DIGIT}(?![\w-])", text)
    return {"relation": (digit_value(m.group(1)), digit_value(m.group(3)), parse_relation(m.group(2)))}


def check_mnist_caption(text: str, lab: dict) -> None:
    parsed = parse_mnist_caption(text)
    if "single" in parsed:
        assert lab["digit2"] == -1 and parsed["single"] == (lab["digit1"], lab["pos1"]), (text, lab)
    elif "absolute" in parsed:
        assert parsed["absolute"] == {(lab["digit1"], lab["pos1"]), (lab["digit2"], lab["pos2"])}, (text, lab)
    else:
        a, b, rel = parsed["relation"]
        if "pos1" in lab:
            options = {(lab["digit1"], lab["digit2"], cell_relation(lab["pos1"], lab["pos2"])),
                       (lab["digit2"], lab["digit1"], cell_relation(lab["pos2"], lab["pos1"]))}
        else:  # relational eval prompt: labels hold the relation only
            from wordcanvas.data.captioned_mnist import RELATION_KEYS
            options = {(lab["digit1"], lab["digit2"], RELATION_KEYS[lab["relation"]])}
        assert (a, b, rel) in options, (text, lab)


@pytest.fixture(scope="module")
def mnist():
    return CaptionedMNIST("train", resolution=64, size=400, seed=0)


def test_captioned_mnist_shapes_determinism_and_split(mnist):
    item = mnist[7]
    assert item["image"].shape == (1, 64, 64) and item["image"].min() >= -1 and item["image"].max() <= 1
    again = CaptionedMNIST("train", resolution=64, size=400, seed=0)[7]
    assert torch.equal(item["image"], again["image"]) and item["labels"] == again["labels"]
    assert not torch.equal(CaptionedMNIST("train", size=400, seed=1)[7]["image"], item["image"])
    assert CaptionedMNIST("train", resolution=32, size=10)[0]["image"].shape == (1, 32, 32)
    test = CaptionedMNIST("test", size=10)
    assert len(mnist.digits) == 4000 and len(test.digits) == 1000
    train_keys = {d.numpy().tobytes() for d in mnist.digits}
    assert not any(d.numpy().tobytes() in train_keys for d in test.digits)  # no digit image in both splits
    two = sum(mnist.labels(i)["digit2"] >= 0 for i in range(200))
    assert 60 < two < 140  # about half the images hold two digits


def test_captioned_mnist_captions_agree_with_labels(mnist):
    for i in range(200):
        lab = mnist.labels(i)
        for caption in mnist.captions(i):
            check_mnist_caption(caption, lab)


def test_captioned_mnist_digits_are_in_their_labelled_cells(mnist):
    rows = np.arange(64) * 3 // 64  # pixel -> grid row/column
    cell_of = (rows[:, None] * 3 + rows[None, :]).ravel()
    for i in range(300):
        ink = ((mnist.image(i)[0] + 1) / 2).numpy().ravel()
        mass = np.bincount(cell_of, weights=ink, minlength=9)
        lab = mnist.labels(i)
        want = {lab["pos1"]} | ({lab["pos2"]} if lab["pos2"] >= 0 else set())
        assert set(np.argsort(mass)[-len(want):].tolist()) == want, (i, lab, mass.round(1))


def test_captioned_mnist_eval_prompts(mnist):
    train_caps = {c for i in range(400) for c in mnist.captions(i)}
    train_vocab = set().union(*(words(c) for c in train_caps))
    for heldout in (False, True):
        prompts = mnist.eval_prompts(90, seed=5, heldout=heldout)
        assert np.bincount([p.labels["digit1"] for p in prompts], minlength=10).tolist() == [9] * 10
        for p in prompts:
            check_mnist_caption(p.text, p.labels)
            if heldout:
                assert p.text not in train_caps and words(p.text) - train_vocab, p.text
    positions = [p.labels["pos1"] for p in mnist.eval_prompts(90, seed=5) if "pos1" in p.labels]
    assert len(set(positions)) == 9


# ---------------------------------------------------------------- caption folder


def _png(path, size=(80, 60), color=(200, 30, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


@pytest.fixture()
def messy_folder(tmp_path):
    root = tmp_path / "photos"
    _png(root / "good.png")
    (root / "good.txt").write_text("a red square\n\n   a  crimson block  \n")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(root / "truncated.png")  # noisy so the file is long enough to cut in the pixel data
    data = (root / "truncated.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "truncated.txt").write_text("cut short\n")
    noisy.save(root / "cut.jpg", quality=95)  # JPEG verify() passes a cut file: only a full decode fails
    data = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "cut.txt").write_text("cut short\n")
    (root / "fake.jpg").write_text("this is not a jpeg")
    (root / "fake.txt").write_text("a fake\n")
    _png(root / "nocap.png")
    _png(root / "empty.png")
    (root / "empty.txt").write_text("\n  \n")
    rgba = Image.new("RGBA", (40, 40), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 40, 20))  # top half fully transparent
    (root / "sub").mkdir()
    rgba.save(root / "sub" / "rgba.png")
    _png(root / "grey.png", size=(50, 70), color=90, mode="L")
    # 64x32 image, left half red, right half blue; EXIF orientation 6 = display rotated 90 deg clockwise
    wide = Image.new("RGB", (64, 32), (255, 0, 0))
    wide.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    wide.save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    (root / "rotated.txt").write_text("turned\n")
    lines = [{"file": "missing.png", "caption": "ghost"}, {"file": "sub/rgba.png", "captions": ["blue", "half blue"]}]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (root / "captions.csv").write_text("file,caption\ngrey.png,a grey card\ngrey.png,plain grey\n")
    return root


def test_caption_folder_skips_and_reports_bad_items(messy_folder):
    with pytest.warns(UserWarning) as record:
        ds = CaptionFolder(messy_folder, resolution=16)
    message = " ".join(str(w.message) for w in record)
    reasons = dict(ds.skipped)
    for name in ("truncated.png", "cut.jpg", "fake.jpg", "nocap.png", "empty.png", "missing.png"):
        assert name in reasons and name in message, name
    assert "unreadable" in reasons["truncated.png"] and "unreadable" in reasons["fake.jpg"]
    assert "caption" in reasons["nocap.png"] and "empty" in reasons["empty.png"] and "missing" in reasons["missing.png"]
    assert "truncated" in reasons["cut.jpg"]
    assert len(ds) == 4 and len(ds.skipped) == 6
    by_name = {path.name: i for i, (path, _) in enumerate(ds.items)}
    assert ds.captions(by_name["good.png"]) == ["a red square", "a crimson block"]
    assert ds.captions(by_name["rgba.png"]) == ["blue", "half blue"]
    assert ds.captions(by_name["grey.png"]) == ["a grey card", "plain grey"]
    for i in range(len(ds)):
        x = ds[i]["image"]
        assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
    grey = ds.image(by_name["grey.png"])
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgba = ds.image(by_name["rgba.png"])
    assert torch.allclose(rgba[:, 2, 8], torch.ones(3)), "transparent pixels should become white"
    assert torch.allclose(rgba[:, 13, 8], torch.tensor([-1.0, -1.0, 1.0]))
    turned = ds.image(by_name["rotated.jpg"])  # after EXIF rotation: red on top, blue below
    assert turned[0, 2, 8] > 0.5 and turned[2, 2, 8] < -0.5
    assert turned[2, 13, 8] > 0.5 and turned[0, 13, 8] < -0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uncached = CaptionFolder(messy_folder, resolution=16, cache=False)
    assert uncached.skipped == ds.skipped and not uncached.cache
    assert all(torch.equal(uncached.image(i), ds.image(i)) for i in range(len(ds)))


def test_caption_folder_refuses_decompression_bombs_and_empty_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    for name, side in (("small.png", 16), ("over_limit.png", 60), ("far_over.png", 100)):
        _png(tmp_path / "b" / name, size=(side, side))
        (tmp_path / "b" / name).with_suffix(".txt").write_text("x\n")
    with pytest.warns(UserWarning, match="over_limit.png"):
        ds = CaptionFolder(tmp_path / "b", resolution=8)
    assert len(ds) == 1 and {n for n, r in ds.skipped if "decompression bomb" in r} == {"over_limit.png", "far_over.png"}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "fake.png").write_text("no")
    (tmp_path / "c" / "fake.txt").write_text("caption")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable image-caption pairs"):
        CaptionFolder(tmp_path / "c", resolution=8)


def test_caption_folder_hash_split_partitions(tmp_path):
    for k in range(40):
        _png(tmp_path / f"img{k:02d}.png", size=(8, 8), color=(k, k, k))
        (tmp_path / f"img{k:02d}.txt").write_text(f"image {k}\n")
    names = {s: {p.name for p, _ in CaptionFolder(tmp_path, 8, split=s, test_fraction=0.25).items}
             for s in ("train", "test", None)}
    assert names["train"] and names["test"] and not names["train"] & names["test"]
    assert names["train"] | names["test"] == names[None] and len(names[None]) == 40


# ---------------------------------------------------------------- registry, loader, CLI


def test_load_dataset_names_and_errors(messy_folder):
    assert {"fashion-mnist", "captioned-mnist", "toy-faces"} <= set(DATASET_NAMES)
    assert default_resolution("fashion-mnist") == 32 and default_resolution("captioned-mnist") == 64
    assert default_resolution("toy-faces") == 64
    ds = load_dataset("captioned-mnist", split="test", size=5)
    assert isinstance(ds, CaptionedMNIST) and ds.resolution == 64 and len(ds) == 5
    assert load_dataset("fashion-mnist", split="test").resolution == 32
    with pytest.warns(UserWarning):
        assert isinstance(load_dataset(str(messy_folder), split=None, resolution=16), CaptionFolder)
    with pytest.raises(ValueError, match="fashion-mnist.*captioned-mnist"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(str(messy_folder / "nowhere"))
    with pytest.raises(ValueError, match="celeba needs a path"):
        load_dataset("celeba:")


def test_loader_batches_and_is_seeded(mnist):
    batches = [next(iter(make_loader(mnist, batch_size=8, shuffle=True, seed=3))) for _ in range(2)]
    b = batches[0]
    assert b["image"].shape == (8, 1, 64, 64) and isinstance(b["caption"], list) and len(b["caption"]) == 8
    assert set(b["labels"]) == {"digit1", "digit2", "pos1", "pos2", "relation"}
    assert all(v.dtype == torch.long and v.shape == (8,) for v in b["labels"].values())
    assert b["caption"] == batches[1]["caption"] and torch.equal(b["image"], batches[1]["image"])
    other = next(iter(make_loader(mnist, batch_size=8, shuffle=True, seed=4)))
    assert other["caption"] != b["caption"]
    assert len(make_loader(mnist, batch_size=64, drop_last=True)) == 400 // 64


def test_preview_cli_writes_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "captioned-mnist", "--n", "6", "--cols", "3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 3 * 64 and im.height > 2 * 64
    assert main(["data", "preview", "no-such-set", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_registry_builds_toy_faces_lazily():
    pytest.importorskip("wordcanvas.data.toy_faces")
    ds = load_dataset("toy-faces", split="train", size=4)
    assert len(ds) == 4 and ds.resolution == 64 and ds[0]["image"].shape[-2:] == (64, 64)


def test_captioned_mnist_near_misses_are_false_and_include_the_swap():
    """Each near-miss caption, read back by a parser written here (digits, places, relations), is false
    of the image its labels describe, while every true caption reads as true; for two different
    digits the swapped layout is among the near misses."""
    import re

    from wordcanvas.data.captioned_mnist import REL_LONG, REL_SHORT, WHERE, CaptionedMNIST, relation

    def read(text):
        digits = [int(d) for d in re.findall(r"\b\d\b", text)]
        places, rest = [], text
        for c, w in sorted(enumerate(WHERE), key=lambda cw: -len(cw[1])):  # longest first: "at the top left"
            at = rest.find(f" {w}")
            if at >= 0 and not rest[at + 1 + len(w):].startswith(" of"):  # not a relation's "at the top of"
                places.append((at, c))
                rest = rest[:at] + "#" * (len(w) + 1) + rest[at + 1 + len(w):]
        # the longest relation phrase found (REL_SHORT "above" is inside "above and left of")
        rels = [(len(p), r) for names in (REL_LONG, REL_SHORT) for r, p in enumerate(names) if f" {p} " in text]
        return digits, [c for _, c in sorted(places)], max(rels)[1] if rels else None

    def true_of(text, lab):
        digits, places, rel = read(text)
        a, ca, b, cb = lab["digit1"], lab["pos1"], lab["digit2"], lab["pos2"]
        if b < 0:
            return digits == [a] and places == [ca]
        if len(digits) != 2:
            return False
        if rel is not None:
            return (digits, rel) in (([a, b], relation(ca, cb)), ([b, a], relation(cb, ca)))
        return sorted(zip(digits, places)) == sorted([(a, ca), (b, cb)])

    data = CaptionedMNIST("train", size=300)
    swaps = 0
    for i in range(300):
        lab = data.labels(i)
        assert all(true_of(t, lab) for t in data.captions(i)), (i, data.captions(i))
        near = data.contrast_captions(i)
        assert near and not any(true_of(t, lab) for t in near), (i, [t for t in near if true_of(t, lab)])
        a, ca, b, cb = lab["digit1"], lab["pos1"], lab["digit2"], lab["pos2"]
        if b >= 0 and a != b:
            swapped = {"digit1": b, "pos1": ca, "digit2": a, "pos2": cb}
            assert any(true_of(t, swapped) for t in near)
            swaps += 1
    assert swaps > 100
    assert data.item(0, near_miss=True)["contrast"] in data.contrast_captions(0)
