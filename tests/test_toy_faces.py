"""Toy faces and the caption grammar: determinism, shapes, captions that tell the truth,
disjoint held-out vocabulary and combinations, and attributes that change the right pixels."""
import re

import numpy as np
import pytest
import torch

from wordcanvas.data.base import CaptionedDataset, Prompt
from wordcanvas.data.grammar import ATTRIBUTES, caption
from wordcanvas.data.toy_faces import HELDOUT_COMBINATIONS, ToyFaces, change_attribute, is_valid, render_face

# Words written here by hand, not taken from the grammar, so the checks are independent of it.
HELDOUT_ONLY = {
    "lady", "gentleman", "individual", "cap", "headwear", "spectacles", "bespectacled", "grinning", "grins",
    "beaming", "unsmiling", "solemn", "whiskers", "whiskered", "clean-shaven", "painted", "rouged", "unpainted",
    "studs", "unadorned", "complexion", "twenties", "forties", "fifties", "seventies", "elderly", "senior",
    "youthful", "raven", "jet-black", "chestnut", "brunette", "golden", "flaxen", "ginger", "auburn", "silver",
    "gray", "cropped", "close-cut", "flowing", "shoulder-length", "locks", "shaved", "hairless", "bareheaded",
    "shaven-headed", "uncovered",
    "backdrop", "ivory", "azure", "emerald", "violet", "portrait", "pictured", "see",
}
TRAIN_ONLY = {
    "woman", "man", "person", "hat", "glasses", "eyeglasses", "smiling", "smiles", "serious", "beard", "bearded",
    "lipstick", "earrings", "skin", "young", "middle-aged", "old", "black", "brown", "blond", "red", "grey",
    "short", "long", "bald", "background", "white", "blue", "green", "purple", "picture",
}
NEGATABLE = {"hat", "eyeglasses", "smiling", "beard", "lipstick", "earrings"}
NEGATIONS = {"without", "no", "not", "lacking", "lacks", "unpainted", "unadorned"}

# word -> (attribute, value) it states when not negated; negated -> value 0 for binary attributes
WORD_FACTS = {
    "woman": ("gender", 0), "lady": ("gender", 0), "she": ("gender", 0), "her": ("gender", 0),
    "man": ("gender", 1), "gentleman": ("gender", 1), "he": ("gender", 1), "his": ("gender", 1),
    "young": ("age", 0), "youthful": ("age", 0), "twenties": ("age", 0),
    "middle-aged": ("age", 1), "forties": ("age", 1), "fifties": ("age", 1),
    "old": ("age", 2), "elderly": ("age", 2), "senior": ("age", 2), "seventies": ("age", 2),
    "black": ("hair_color", 0), "raven": ("hair_color", 0), "jet-black": ("hair_color", 0),
    "brown": ("hair_color", 1), "chestnut": ("hair_color", 1), "brunette": ("hair_color", 1),
    "blond": ("hair_color", 2), "golden": ("hair_color", 2), "flaxen": ("hair_color", 2),
    "red": ("hair_color", 3), "ginger": ("hair_color", 3), "auburn": ("hair_color", 3),
    "grey": ("hair_color", 4), "gray": ("hair_color", 4), "silver": ("hair_color", 4),
    "bald": ("hair_style", 0), "shaved": ("hair_style", 0), "hairless": ("hair_style", 0),
    "short": ("hair_style", 1), "cropped": ("hair_style", 1), "close-cut": ("hair_style", 1),
    "long": ("hair_style", 2), "flowing": ("hair_style", 2), "shoulder-length": ("hair_style", 2),
    "shaven-headed": ("hair_style", 0),
    "hat": ("hat", 1), "cap": ("hat", 1), "headwear": ("hat", 1), "bareheaded": ("hat", 0), "uncovered": ("hat", 0),
    "glasses": ("eyeglasses", 1), "eyeglasses": ("eyeglasses", 1), "spectacles": ("eyeglasses", 1),
    "bespectacled": ("eyeglasses", 1),
    "smiling": ("smiling", 1), "smiles": ("smiling", 1), "grinning": ("smiling", 1), "grins": ("smiling", 1),
    "grin": ("smiling", 1), "beaming": ("smiling", 1), "serious": ("smiling", 0), "solemn": ("smiling", 0),
    "unsmiling": ("smiling", 0), "straight": ("smiling", 0), "neutral": ("smiling", 0),
    "beard": ("beard", 1), "bearded": ("beard", 1), "whiskers": ("beard", 1), "whiskered": ("beard", 1),
    "facial": ("beard", 1), "clean-shaven": ("beard", 0), "smooth": ("beard", 0),
    "lipstick": ("lipstick", 1), "painted": ("lipstick", 1), "rouged": ("lipstick", 1), "unpainted": ("lipstick", 0),
    "earrings": ("earrings", 1), "studs": ("earrings", 1), "unadorned": ("earrings", 0),
    "pale": ("skin_tone", 0), "light": ("skin_tone", 0), "fair": ("skin_tone", 0), "porcelain": ("skin_tone", 0),
    "tan": ("skin_tone", 1), "olive": ("skin_tone", 1), "dark": ("skin_tone", 2), "ebony": ("skin_tone", 2),
    "deep": ("skin_tone", 2),
}
BACKGROUND_WORDS = {"white": 0, "ivory": 0, "blue": 1, "azure": 1, "green": 2, "emerald": 2, "purple": 3, "violet": 3}


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z\-]*", text.lower())


def stated_facts(text: str) -> dict[str, int]:
    """An independent reading of a caption: attribute -> value, from keywords and nearby negations."""
    facts = {}
    for clause in re.split(r"[.,;]", text):
        facts.update(_clause_facts(tokens(clause)))
    return facts


def _clause_facts(words: list[str]) -> dict[str, int]:
    facts = {}
    for k, w in enumerate(words):
        if w in BACKGROUND_WORDS and {"background", "backdrop"} & set(words[k + 1:k + 2]):
            facts["background"] = BACKGROUND_WORDS[w]
            continue
        if w not in WORD_FACTS:
            continue
        name, value = WORD_FACTS[w]
        if name == "hair_color" and not {"hair", "locks", "beard", "whiskers"} & set(words[k + 1:k + 3]):
            continue  # a colour word that is not about hair (e.g. a background)
        before = words[max(0, k - 3):k]
        if "and" in before:  # a negation does not reach past "and"
            before = before[len(before) - before[::-1].index("and"):]
        if name in NEGATABLE and NEGATIONS & set(before):
            value = 0
        facts[name] = value
    return facts


def random_attrs(n: int, seed: int = 0) -> list[dict[str, int]]:
    ds = ToyFaces("train", size=n, seed=seed)
    return [ds.labels(i) for i in range(n)]


@pytest.fixture(scope="module")
def train_attrs():
    return random_attrs(2500)


@pytest.fixture(scope="module")
def captions_by_set(train_attrs):
    rng = np.random.default_rng(0)
    out = {}
    for template_set in ("train", "heldout"):
        out[template_set] = [(a, *caption(a, rng, template_set)) for a in train_attrs]
    return out


def test_dataset_protocol_and_determinism():
    a, b = ToyFaces("train", 64, size=20, seed=3), ToyFaces("train", 64, size=20, seed=3)
    assert isinstance(a, CaptionedDataset) and len(a) == 20
    for i in (0, 7, 19):
        assert torch.equal(a.image(i), b.image(i))
        assert a.labels(i) == b.labels(i) and a.captions(i) == b.captions(i)
        assert a[i]["caption"] == b[i]["caption"]
    other = ToyFaces("train", 64, size=20, seed=4)
    assert not torch.equal(a.image(0), other.image(0))
    assert not torch.equal(a.image(0), a.image(1))
    test = ToyFaces("test", 64, size=20, seed=3)  # another random stream
    assert [test.labels(i) for i in range(20)] != [a.labels(i) for i in range(20)]
    with pytest.raises(IndexError):
        a.labels(20)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_and_range(resolution):
    ds = ToyFaces("train", resolution, size=4)
    item = ds[2]
    assert set(item) == {"image", "caption", "labels"}
    x = item["image"]
    assert x.shape == (3, resolution, resolution) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert set(item["labels"]) == set(ATTRIBUTES) and isinstance(item["caption"], str)
    assert len(ds.captions(2)) == 5


def test_attribute_distribution(train_attrs):
    """Every class occurs; correlations are the plausible ones."""
    for name, classes in ATTRIBUTES.items():
        seen = {a[name] for a in train_attrs}
        assert set(range(len(classes))) <= seen, name
    for a in train_attrs:
        assert not (a["gender"] == 0 and a["beard"]) and not (a["gender"] == 1 and a["lipstick"])
        assert (a["hair_color"] == -1) == (a["hair_style"] == 0)  # a bald head has no hair colour
        assert not (a["hair_style"] == 0 and a["hat"])
    grey = lambda age: np.mean([a["hair_color"] == 4 for a in train_attrs if a["age"] == age and a["hair_color"] >= 0])
    assert grey(2) > 3 * grey(0)


@pytest.mark.parametrize("template_set", ["train", "heldout"])
def test_captions_state_only_true_attributes(captions_by_set, template_set):
    for attrs, text, mentioned in captions_by_set[template_set]:
        assert 2 <= len(mentioned) <= 5, text
        for name, value in mentioned.items():
            assert attrs[name] == value >= 0, (text, name)
        # The independent reading agrees with both the labels and the `mentioned` dict.
        facts = stated_facts(text)
        assert facts == mentioned, (text, facts, mentioned)


def test_natural_training_caption():
    attrs = dict(gender=0, age=1, hair_color=1, hair_style=2, hat=1, eyeglasses=0, smiling=0, beard=0,
                 lipstick=0, earrings=0, skin_tone=0, background=0)
    rng = np.random.default_rng(0)
    texts = {caption(attrs, rng, "train", low=3, high=3)[0] for _ in range(3000)}
    assert "a middle-aged woman wearing a hat" in texts


def test_heldout_vocabulary_is_disjoint(captions_by_set):
    train_vocab = {w for _, text, _ in captions_by_set["train"] for w in tokens(text)}
    heldout_vocab = {w for _, text, _ in captions_by_set["heldout"] for w in tokens(text)}
    assert not train_vocab & HELDOUT_ONLY
    assert not heldout_vocab & TRAIN_ONLY
    for _, text, _ in captions_by_set["heldout"]:  # every held-out caption has words training never shows
        assert set(tokens(text)) - train_vocab, text
    # and the dataset's own training captions obey the same split
    ds = ToyFaces("train", size=300)
    assert not {w for i in range(300) for c in ds.captions(i) for w in tokens(c)} & HELDOUT_ONLY


def test_heldout_combinations():
    assert 3 <= len(HELDOUT_COMBINATIONS) <= 5
    contains = lambda a: [all(a[k] == v for k, v in c.items()) for c in HELDOUT_COMBINATIONS]
    for split, seed in (("train", 0), ("test", 1)):
        ds = ToyFaces(split, size=4000, seed=seed)
        assert not any(any(contains(ds.labels(i))) for i in range(4000)), split
    ds = ToyFaces("heldout", size=200)
    hits = np.array([contains(ds.labels(i)) for i in range(200)])
    assert hits.any(1).all() and hits.any(0).all()  # only combinations, and all of them
    for i in range(0, 200, 7):  # its captions name the combination
        combo = HELDOUT_COMBINATIONS[int(np.argmax(hits[i]))]
        for text in ds.captions(i):
            assert all(stated_facts(text).get(k) == v for k, v in combo.items()), text


def test_eval_prompts():
    ds = ToyFaces("test", size=100)
    for heldout in (False, True):
        prompts = ds.eval_prompts(300, seed=5, heldout=heldout)
        assert prompts == ds.eval_prompts(300, seed=5, heldout=heldout)
        assert all(isinstance(p, Prompt) and 2 <= len(p.labels) <= 5 for p in prompts)
        for p in prompts:
            assert stated_facts(p.text) == p.labels, p.text
            assert bool(set(tokens(p.text)) & HELDOUT_ONLY) == heldout
    held = ToyFaces("heldout", size=100).eval_prompts(40, heldout=True)
    for k, p in enumerate(held):
        assert all(p.labels.get(a) == v for a, v in HELDOUT_COMBINATIONS[k % len(HELDOUT_COMBINATIONS)].items())


# Where each attribute must show at 64 px: (rows, cols) boxes from the face layout plus the
# largest pose shift (rotation, scale, offset), and how many pixels it must clearly change.
BOXES = {
    "smiling": [(slice(33, 49), slice(21, 43))],
    "lipstick": [(slice(33, 49), slice(21, 43))],
    "eyeglasses": [(slice(20, 40), slice(11, 53))],
    "beard": [(slice(27, 56), slice(11, 53))],
    "hat": [(slice(0, 30), slice(2, 62))],
    "earrings": [(slice(27, 45), slice(9, 28)), (slice(27, 45), slice(36, 55))],
}
MIN_CHANGED = {"smiling": 12, "lipstick": 8, "eyeglasses": 30, "beard": 100, "hat": 200, "earrings": 10}


def flip_pair(name: str, k: int):
    """Two renders with identical nuisances that differ only in `name` (off, on)."""
    a = random_attrs(1, seed=1000 + k)[0]
    if name == "beard":
        a.update(gender=1, lipstick=0)
    if name == "lipstick":
        a.update(gender=0, beard=0)
    if name == "hat" and a["hair_style"] == 0:
        a.update(hair_style=1, hair_color=0)
    off = render_face({**a, name: 0}, np.random.default_rng(k), 64).astype(float)
    on = render_face({**a, name: 1}, np.random.default_rng(k), 64).astype(float)
    return off, on


@pytest.mark.parametrize("name", list(BOXES))
def test_attribute_changes_its_region(name):
    inside = np.zeros((64, 64), bool)
    for rows, cols in BOXES[name]:
        inside[rows, cols] = True
    luma = lambda img: img @ np.array([0.3, 0.59, 0.11])  # noqa: E731
    for k in range(25):
        off, on = flip_pair(name, k)
        diff = np.abs(on - off).sum(-1)
        assert diff[inside].sum() >= 0.97 * diff.sum(), (name, k)
        changed = diff > 30  # clearly visible change (sum over RGB, 0..765)
        assert changed.sum() >= MIN_CHANGED[name], (name, k, changed.sum())
        if name == "lipstick":  # the lips turn red
            red = lambda img: (img[..., 0] - img[..., 1:].mean(-1))[changed].mean()  # noqa: E731
            assert red(on) > red(off) + 25, k
        if name == "eyeglasses":  # a dark frame
            assert luma(on)[changed].mean() < luma(off)[changed].mean() - 10, k
        if name == "smiling":  # white teeth appear: bright and unsaturated
            whiteness = lambda img: (img.min(-1) - (img.max(-1) - img.min(-1)))[changed].max()  # noqa: E731
            assert whiteness(on) > whiteness(off) + 40, k


def test_near_miss_captions_contradict_the_face():
    """Read by this file's own reader (`stated_facts`), each near-miss caption states at least one
    attribute the face does not have (usually exactly one: an edit's difference), and training
    items carry one only when asked to."""
    faces = ToyFaces("train", 64, size=60)
    wrong_counts = []
    for i in range(60):
        labels = faces.labels(i)
        for text in faces.contrast_captions(i):
            facts = stated_facts(text)
            wrong_counts.append(sum(labels[k] != v for k, v in facts.items()))
    assert min(wrong_counts) >= 1
    assert np.mean([c == 1 for c in wrong_counts]) > 0.9
    assert "contrast" not in faces[0]
    assert faces.item(0, near_miss=True)["contrast"] in faces.contrast_captions(0)


def test_change_attribute_brings_hair_and_hat_along():
    """Going bald drops the hair colour and the hat; growing hair on a bald head draws a colour;
    any other change touches that attribute alone."""
    faces, rng = ToyFaces("train", 64, size=400), np.random.default_rng(0)
    bald = ATTRIBUTES["hair_style"].index("bald")
    seen = {"went_bald": 0, "grew_hair": 0}
    for i in range(400):
        attrs = faces.labels(i)
        for attr in ATTRIBUTES:
            value = (attrs[attr] + 1) % len(ATTRIBUTES[attr])
            new = change_attribute(attrs, attr, value, rng)
            changed = {k for k in attrs if new[k] != attrs[k]}
            assert new[attr] == value and attrs == faces.labels(i)  # the input is left alone
            if attr == "hair_style" and value == bald:
                assert new["hair_color"] == -1 and new["hat"] == 0
                seen["went_bald"] += 1
            elif attr == "hair_style" and attrs[attr] == bald:
                assert 0 <= new["hair_color"] < len(ATTRIBUTES["hair_color"]) and changed <= {attr, "hair_color"}
                seen["grew_hair"] += 1
            else:
                assert changed == {attr}
            if attr == "hair_style":  # a hair change alone never makes an impossible face
                assert is_valid(new)
    assert min(seen.values()) > 0
