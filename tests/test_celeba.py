"""CelebA-layout loader on a miniature CelebA written in the original file formats."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from wordcanvas.data.celeba import CelebA
from wordcanvas.data.grammar import ATTRIBUTES

try:  # the independent caption reader lives with the toy-face tests
    from test_toy_faces import stated_facts
except ImportError:  # tests/ imported as a package
    from tests.test_toy_faces import stated_facts

# The 40 attribute names of list_attr_celeba.txt, in the file's order.
CELEBA_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

# filename -> (partition, attributes set to +1, centre colour)
FIXTURE = {
    "000001.jpg": (0, {"Young", "Blond_Hair", "Wearing_Lipstick", "Smiling", "No_Beard", "Wearing_Earrings"}, (220, 40, 40)),
    "000002.jpg": (0, {"Male", "Gray_Hair", "Eyeglasses"}, (40, 200, 60)),  # not Young, bearded
    "000003.jpg": (0, {"Male", "Bald", "Young", "No_Beard", "Wearing_Hat", "Pale_Skin"}, (40, 60, 210)),
    "000004.jpg": (0, {"Black_Hair", "Brown_Hair", "No_Beard"}, (230, 230, 40)),  # two hair colours: unknown
    "000005.jpg": (0, set(), None),  # corrupt: not a JPEG at all
    "000006.jpg": (1, {"Male", "Brown_Hair", "Young", "Smiling", "No_Beard"}, (200, 120, 40)),
    "000007.jpg": (2, {"Young", "Wavy_Hair", "No_Beard", "Wearing_Hat"}, (120, 40, 200)),
    "000008.jpg": (2, {"Male", "Black_Hair"}, (40, 200, 200)),
}
# What each file must map to, written out by hand (-1 = CelebA cannot tell).
EXPECTED = {
    "000001.jpg": dict(gender=0, age=0, hair_color=2, hair_style=-1, hat=0, eyeglasses=0, smiling=1, beard=0,
                       lipstick=1, earrings=1, skin_tone=-1, background=-1),
    "000002.jpg": dict(gender=1, age=-1, hair_color=4, hair_style=-1, hat=0, eyeglasses=1, smiling=0, beard=1,
                       lipstick=0, earrings=0, skin_tone=-1, background=-1),
    "000003.jpg": dict(gender=1, age=0, hair_color=-1, hair_style=0, hat=1, eyeglasses=0, smiling=0, beard=0,
                       lipstick=0, earrings=0, skin_tone=0, background=-1),
    "000004.jpg": dict(gender=0, age=-1, hair_color=-1, hair_style=-1, hat=0, eyeglasses=0, smiling=0, beard=0,
                       lipstick=0, earrings=0, skin_tone=-1, background=-1),
}
W, H = 64, 80  # portrait like img_align_celeba (178 x 218)


def write_image(path, centre):
    """A centre square of one colour between grey bands that a centre crop must remove."""
    a = np.full((H, W, 3), 128, np.uint8)
    a[(H - W) // 2:(H + W) // 2] = centre
    Image.fromarray(a).save(path, quality=95)


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    (root / "img_align_celeba").mkdir()
    rows, parts = [], []
    for name, (part, on, colour) in FIXTURE.items():
        if colour is None:
            (root / "img_align_celeba" / name).write_bytes(b"this is not a jpeg" * 20)
        else:
            write_image(root / "img_align_celeba" / name, colour)
        rows.append(name + " " + " ".join(f"{1 if a in on else -1:2d}" for a in CELEBA_NAMES))
        parts.append(f"{name} {part}")
    (root / "list_attr_celeba.txt").write_text(f"{len(FIXTURE)}\n" + " ".join(CELEBA_NAMES) + "\n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return root


def load(root, split, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CelebA(root, split, **kw)
    return ds, [str(w.message) for w in caught]


def test_splits_and_corrupt_file(celeba_root):
    train, messages = load(celeba_root, "train", resolution=32)
    assert train.files == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert [f for f, _ in train.skipped] == ["000005.jpg"]
    assert len(messages) == 1 and "skipped 1" in messages[0] and "000005.jpg" in messages[0]
    valid, messages = load(celeba_root, "valid", resolution=32)
    assert valid.files == ["000006.jpg"] and not messages
    test, _ = load(celeba_root, "test", resolution=32)
    assert test.files == ["000007.jpg", "000008.jpg"]
    everything, _ = load(celeba_root, "all", resolution=32)
    assert len(everything) == 7


def test_attribute_mapping(celeba_root):
    ds, _ = load(celeba_root, "train", resolution=32)
    assert ds.raw_attributes(1)["Gray_Hair"] == 1 and ds.raw_attributes(1)["Young"] == -1
    for i, name in enumerate(ds.files):
        assert ds.labels(i) == EXPECTED[name], name
    assert set(ds.label_spec.classes) == set(ATTRIBUTES)


@pytest.mark.parametrize("resolution", [16, 32])
def test_images_centre_cropped(celeba_root, resolution):
    ds, _ = load(celeba_root, "train", resolution=resolution)
    for i, name in enumerate(ds.files):
        x = ds[i]["image"]
        assert x.shape == (3, resolution, resolution) and x.dtype == torch.float32
        rgb = (x.permute(1, 2, 0).numpy() + 1) * 127.5
        # every pixel is the centre colour: the grey bands were cropped away
        assert np.abs(rgb - np.array(FIXTURE[name][2])).max() < 25, name


def test_captions_consistent_with_attributes(celeba_root):
    ds, _ = load(celeba_root, "all", resolution=16, captions_per_image=20)
    for i in range(len(ds)):
        labels = ds.labels(i)
        for text in ds.captions(i):
            facts = stated_facts(text)
            assert facts and all(labels[k] == v >= 0 for k, v in facts.items()), (text, labels)
    for p in ds.eval_prompts(50, seed=1):
        assert stated_facts(p.text) == p.labels
        assert all(v >= 0 for v in p.labels.values())


def test_file_broken_after_check_is_skipped(celeba_root, tmp_path):
    # A truncated JPEG passes the header check; reading it must skip to the next image.
    root = tmp_path / "c"
    root.mkdir()
    (root / "img_align_celeba").mkdir()
    (root / "img_align_celeba" / "000002.jpg").write_bytes((celeba_root / "img_align_celeba" / "000002.jpg").read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)  # a long scan to cut short
    Image.fromarray(noise).save(root / "img_align_celeba" / "000001.jpg", quality=95)
    data = (root / "img_align_celeba" / "000001.jpg").read_bytes()
    (root / "img_align_celeba" / "000001.jpg").write_bytes(data[: len(data) // 2])
    lines = (celeba_root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join(["2", lines[1], lines[2], lines[3]]) + "\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")

    ds, messages = load(root, "train", resolution=16)
    assert len(ds) == 2 and not messages
    with pytest.warns(UserWarning, match="000001.jpg"):
        item = ds[0]
    assert item["labels"] == EXPECTED["000002.jpg"]  # image, caption and labels of the same picture
    assert [f for f, _ in ds.skipped] == ["000001.jpg"]

    full, messages = load(root, "train", resolution=16, verify="full")  # a full decode catches it up front
    assert full.files == ["000002.jpg"] and "000001.jpg" in messages[0]


def test_missing_layout_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        CelebA(tmp_path)
