"""Prompt-faithfulness judges: shipped probes against the datasets' own labels, the scoring logic on
hand-made predictions, R-precision against cases known by construction and a brute-force
re-implementation, and the `evaluate` CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wordcanvas.cli import main
from wordcanvas.data import load_dataset
from wordcanvas.data.base import Prompt
from wordcanvas.data.captioned_mnist import RELATION_NAMES
from wordcanvas.metrics.probes import EMPTY, judge_cells, load_probe, score_predictions, shipped_dir
from wordcanvas.metrics.rprecision import Matcher, caption_with_labels, load_dual_encoder, r_precision, scheme_of
from wordcanvas.models.base import CheckpointError

TARGETS = {"fashion-mnist": 0.92, "toy-faces": 0.97, "captioned-mnist": 0.95}  # ~ docs/probes.json real_test
MARGIN = 0.03  # a few hundred test images: ~1-2 % sampling error


def real_batch(name: str, n: int):
    dataset = load_dataset(name, "test")
    images = torch.stack([dataset.image(i) for i in range(n)])
    return dataset, images, [dataset.labels(i) for i in range(n)]


# ---------------------------------------------------------------- shipped probes vs dataset labels

@pytest.mark.parametrize("name", ["fashion-mnist", "toy-faces"])
def test_shipped_label_probe_accuracy_on_real_test_images(name):
    probe = load_probe(name)
    _, images, labels = real_batch(name, 300)
    pred = probe.predict(images)
    for attr in probe.config.heads:
        truth = torch.tensor([l[attr] for l in labels])
        known = truth >= 0
        acc = (pred[attr][known] == truth[known]).float().mean().item()
        assert acc >= TARGETS[name] - MARGIN, (name, attr, acc)


def test_shipped_cell_probe_reads_digits_and_places():
    probe = load_probe("captioned-mnist")
    _, images, labels = real_batch("captioned-mnist", 300)
    pred = torch.stack([probe.predict(images)[f"cell{c}"] for c in range(9)], 1)
    digit_ok, place_ok = [], []
    for row, l in zip(pred.tolist(), labels):
        placed = {l["pos1"]: l["digit1"]} | ({l["pos2"]: l["digit2"]} if l["digit2"] >= 0 else {})
        occupied = {c for c, d in enumerate(row) if d != EMPTY}
        place_ok.append(occupied == set(placed))
        digit_ok += [row[c] == d for c, d in placed.items()]
    assert np.mean(digit_ok) >= TARGETS["captioned-mnist"] - MARGIN
    assert np.mean(place_ok) >= TARGETS["captioned-mnist"] - MARGIN


def test_shipped_weights_are_small_versioned_and_checked(tmp_path):
    for kind in ("probes", "dual"):
        for name in TARGETS:
            folder = shipped_dir(kind, name)
            meta = json.loads((folder / "config.json").read_text())
            assert meta["config"]["version"] and len(meta["weights_sha256"]) == 64
            assert (folder / "model.safetensors").stat().st_size < 2 * 1024 * 1024
    bad = tmp_path / "probe"
    shutil.copytree(shipped_dir("probes", "fashion-mnist"), bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_probe("fashion-mnist", bad)


# ---------------------------------------------------------------- scoring logic on hand-made predictions

class FakeProbe:
    """Known outputs: scores must follow from them by hand."""

    def __init__(self, preds):
        self.preds = {k: torch.tensor(v) for k, v in preds.items()}

    def predict(self, images):
        return self.preds


def test_score_predictions_labels_by_hand():
    preds = FakeProbe({"a": [0, 1, 2, 0], "b": [1, 1, 0, 0]}).predict(None)
    prompts = [Prompt("", {"a": 0, "b": 1}), Prompt("", {"a": 1}), Prompt("", {"b": 1}), Prompt("", {"a": 0, "b": 1})]
    s = score_predictions(preds, prompts, "labels")
    assert s["per_attribute"]["a"] == {"accuracy": 1.0, "count": 3}
    assert s["per_attribute"]["b"]["count"] == 3 and s["per_attribute"]["b"]["accuracy"] == pytest.approx(1 / 3)
    assert s["all_correct"] == 0.5 and s["n"] == 4


def test_judge_cells_checks_binding_count_and_relation():
    grid = [EMPTY] * 9
    grid[0], grid[5] = 3, 5  # a 3 top left, a 5 on the right: the 3 is above-left of the 5
    above_left, right = RELATION_NAMES.index("above left"), RELATION_NAMES.index("right")
    cases = [  # (labels, expected per-attribute verdicts, all correct)
        ({"digit1": 3, "pos1": 0, "digit2": 5, "pos2": 5},
         dict(digit1=1, digit2=1, pos1=1, pos2=1, placed1=1, placed2=1, count=1), True),
        ({"digit1": 5, "pos1": 5, "digit2": 3, "pos2": 0},
         dict(digit1=1, digit2=1, pos1=1, pos2=1, placed1=1, placed2=1, count=1), True),
        ({"digit1": 3, "pos1": 5, "digit2": 5, "pos2": 0},  # both cells inked, digits swapped: not placed
         dict(digit1=1, digit2=1, pos1=1, pos2=1, placed1=0, placed2=0, count=1), False),
        ({"digit1": 3, "digit2": 5, "relation": above_left}, dict(digit1=1, digit2=1, count=1, relation=1), True),
        ({"digit1": 3, "digit2": 5, "relation": right}, dict(digit1=1, digit2=1, count=1, relation=0), False),
        ({"digit1": 3, "pos1": 0, "digit2": -1, "pos2": -1}, dict(digit1=1, pos1=1, placed1=1, count=0), False),
        ({"digit1": 3, "pos1": 0, "digit2": 3, "pos2": 5},
         dict(digit1=1, digit2=0, pos1=1, pos2=1, placed1=1, placed2=0, count=1), False),
        ({"digit1": 7, "pos1": 4, "digit2": -1, "pos2": -1}, dict(digit1=0, pos1=0, placed1=0, count=0), False),
    ]
    for labels, verdicts, ok in cases:
        got, all_ok = judge_cells(grid, labels)
        assert {k: int(v) for k, v in got.items()} == verdicts, labels
        assert all_ok == ok, labels
    preds = {f"cell{c}": torch.tensor([grid[c]] * len(cases)) for c in range(9)}
    s = score_predictions(preds, [Prompt("", l) for l, _, _ in cases], "cells")
    assert s["all_correct"] == pytest.approx(3 / 8)
    assert s["per_attribute"]["relation"] == {"accuracy": 0.5, "count": 2}
    # by kind, from the table's last column: cases 0, 1, 2, 6 name two cells (2 of 4 right), 3 and 4 a
    # relation (1 of 2), 5 and 7 one digit (none right)
    assert s["all_correct_by_kind"] == {"two digits in named cells": {"all_correct": 0.5, "count": 4},
                                        "two digits in a relation": {"all_correct": 0.5, "count": 2},
                                        "one digit": {"all_correct": 0.0, "count": 2}}


# ---------------------------------------------------------------- R-precision

class VectorDual:
    """Images are their own embeddings; texts are looked up in a table."""

    def __init__(self, table: dict[str, torch.Tensor]):
        self.table = table

    def embed_images(self, images):
        return F.normalize(images.float(), dim=-1)

    def embed_texts(self, texts):
        return F.normalize(torch.stack([self.table[t] for t in texts]).float(), dim=-1)


def class_pool(per_class: int, classes: int = 10):
    return [Prompt(f"class {k} phrasing {j}", {"class": k}) for k in range(classes) for j in range(per_class)]


def test_r_precision_oracle_is_one_and_random_is_chance():
    pool = class_pool(20)
    captions = [pool[(i * 7) % len(pool)] for i in range(1000)]
    onehot = {p.text: F.one_hot(torch.tensor(p.labels["class"]), 10) for p in pool}
    images = torch.stack([onehot[p.text] for p in captions])
    oracle = r_precision(VectorDual(onehot), images, captions, pool, seed=1)
    assert oracle["r_precision"] == 1.0 and oracle["r_precision_std"] == 0.0

    g = torch.Generator().manual_seed(0)
    noise = {p.text: torch.randn(32, generator=g) for p in pool}
    captions = [pool[i % len(pool)] for i in range(2000)]
    rand = r_precision(VectorDual(noise), torch.randn(2000, 32, generator=g), captions, pool, seed=1)
    assert 0.003 < rand["r_precision"] < 0.025  # chance is 1/100


def test_r_precision_matches_brute_force():
    # 11 captions per class: every caption has exactly 99 mismatched ones (all other classes), so the
    # draw of 99 candidates is the whole set and a direct computation must agree exactly.
    pool = class_pool(11)
    g = torch.Generator().manual_seed(3)
    table = {p.text: torch.randn(16, generator=g) + 1.5 * F.pad(F.one_hot(torch.tensor(p.labels["class"]), 10), (0, 6))
             for p in pool}
    captions = [pool[i % len(pool)] for i in range(400)]
    images = torch.stack([table[p.text] for p in captions]) + 1.2 * torch.randn(400, 16, generator=g)
    got = r_precision(VectorDual(table), images, captions, pool, seed=5, repeats=2)

    def unit(v):
        return v / v.norm()

    hits = 0
    for img, cap in zip(images, captions):
        true = float(unit(img) @ unit(table[cap.text]))
        others = [float(unit(img) @ unit(table[p.text])) for p in pool if p.labels["class"] != cap.labels["class"]]
        assert len(others) == 99
        hits += true > max(others)
    assert got["r_precision"] == pytest.approx(hits / 400) and got["r_precision_std"] == 0.0
    assert 0.05 < got["r_precision"] < 0.95  # a case that actually discriminates


def test_mismatch_means_contradiction_not_different_text():
    m = Matcher("labels", ["gender", "smiling", "hat"])
    pool = [{"gender": 1}, {"hat": 1}, {"gender": 0, "hat": 1}, {"smiling": 0, "hat": 1}]
    assert m.mismatched({"gender": 0, "smiling": 1}, pool).tolist() == [True, False, False, True]
    cells = Matcher("cells", [])
    above = RELATION_NAMES.index("above")
    pool = [{"digit1": 3, "digit2": 5, "relation": above},            # consistent: 3 at top, 5 in the centre
            {"digit1": 5, "digit2": 3, "relation": RELATION_NAMES.index("below")},  # the same, other order
            {"digit1": 3, "pos1": 4, "digit2": -1, "pos2": -1},       # one digit: contradicts
            {"digit1": 3, "pos1": 1, "digit2": 5, "pos2": 7}]         # 5 at the bottom: contradicts
    wanted = {"digit1": 3, "pos1": 1, "digit2": 5, "pos2": 4}
    assert cells.mismatched(wanted, pool).tolist() == [False, False, True, True]


@pytest.mark.parametrize("name", ["fashion-mnist", "toy-faces", "captioned-mnist"])
def test_shipped_dual_encoder_ranks_real_captions_far_above_chance(name):
    dataset, images, labels = real_batch(name, 200)
    rng = __import__("random").Random(0)
    captions = [caption_with_labels(name, l, rng) for l in labels]
    pool = dataset.eval_prompts(300, seed=12345)
    dual = load_dual_encoder(name)
    out = r_precision(dual, images, captions, pool, seed=0, repeats=1, scheme=scheme_of(name),
                      label_names=list(dataset.label_spec.classes))
    assert out["r_precision"] > 0.3, out  # chance is 0.01


# ---------------------------------------------------------------- CLI

def test_evaluate_real_vs_real_cli_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "floor.json"
    code = main(["evaluate", "--real-vs-real", "fashion-mnist", "--n", "8",
                 "--out", str(out), "--md", str(tmp_path / "floor.md"), "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    for key in ("fid", "kid", "kid_std", "precision", "recall", "n", "dataset", "protocol", "extractor"):
        assert key in result
    assert result["n"] == 8 and result["dataset"] == "fashion-mnist"
    assert result["fid"] > 0 and 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert "FID" in (tmp_path / "floor.md").read_text()
    assert list((tmp_path / "cache" / "features").glob("*.npz"))  # both real sets are cached


def test_evaluate_generator_with_an_oracle_generator(tmp_path, monkeypatch):
    """A 'generator' that returns real test images of the prompted class must score like real data."""
    from wordcanvas.data.fashion_mnist import heldout_captions, train_captions
    from wordcanvas.metrics.evaluate import evaluate_generator, write_result
    from wordcanvas.metrics.inception import InceptionFeatures

    monkeypatch.setenv("WORDCANVAS_CACHE", str(tmp_path / "cache"))
    test = load_dataset("fashion-mnist", "test")
    by_class = {k: [i for i in range(600) if test.labels(i)["class"] == k] for k in range(10)}
    text_class = {t: k for k in range(10) for t in train_captions(k) + heldout_captions(k)}

    def oracle(prompts, seed):
        g = torch.Generator().manual_seed(seed)
        picks = [by_class[text_class[p]][int(torch.randint(len(by_class[text_class[p]]), (1,), generator=g))]
                 for p in prompts]
        return torch.stack([test.image(i) for i in picks])

    r = evaluate_generator(oracle, "fashion-mnist", n=8, batch_size=4, heldout=True, floor=False, progress=False,
                           extractor=InceptionFeatures(), diversity_prompts=2, diversity_seeds=2)
    assert r["n"] == 8 and r["n_fake"] == 8 and np.isfinite(r["fid"])
    assert r["probe"]["per_attribute"]["class"]["count"] == 8
    # real test: probe ~0.93, R-precision ~0.90; 8 samples leave room for two misses
    assert r["probe"]["all_correct"] >= 0.7 and r["r_precision"]["r_precision"] >= 0.6
    assert r["diversity"]["lpips_diversity"] > 0.05  # different real images per seed
    write_result(r, tmp_path / "eval.json")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert {"fid", "kid", "precision", "recall", "probe", "r_precision", "diversity"} <= set(saved)
    assert (tmp_path / "eval.png").exists()


def test_evaluate_generator_without_distribution_metrics_never_builds_inception(monkeypatch):
    """distribution=False scores faithfulness only: the oracle's probe result stays, FID goes."""
    from wordcanvas.data.fashion_mnist import train_captions
    from wordcanvas.metrics import evaluate as ev

    monkeypatch.setattr(ev, "InceptionFeatures", lambda *a, **k: pytest.fail("Inception was built"))
    test = load_dataset("fashion-mnist", "test")
    first = {test.labels(i)["class"]: i for i in reversed(range(300))}
    text_class = {t: k for k in range(10) for t in train_captions(k)}
    r = ev.evaluate_generator(lambda prompts, seed: torch.stack([test.image(first[text_class[p]]) for p in prompts]),
                              "fashion-mnist", n=10, batch_size=5, progress=False, distribution=False,
                              diversity_prompts=0)
    assert "fid" not in r and "floor" not in r
    assert r["probe"]["per_attribute"]["class"]["count"] == 10 and r["probe"]["all_correct"] >= 0.7


def test_dual_encoder_refuses_another_text_encoder():
    class OtherEncoder:  # right dimension, different outputs
        name, dim = "other", 384

        def identity(self):
            return "other"

        def encode(self, texts):
            g = torch.Generator().manual_seed(len(texts))
            return type("E", (), {"pooled": F.normalize(torch.randn(len(texts), 384, generator=g), dim=-1)})

    with pytest.raises(ValueError, match="fingerprint"):
        load_dual_encoder("fashion-mnist", encoder=OtherEncoder())


def test_evaluation_generator_samples_at_the_given_truncation():
    """`wordcanvas evaluate --truncation t` draws every image's noise truncated at t (the same
    images as TextToImage at t with the per-image seeds), and without it the model's own setting."""
    from wordcanvas.commands.metrics_cmd import generator_fn, image_seed
    from wordcanvas.generate import TextToImage
    from wordcanvas.models.defaults import resolve_model

    folder = resolve_model("fashion-mnist")
    t2i = TextToImage.from_pretrained(folder)
    prompts = ["a coat", "a sneaker", "a bag"]
    truncated = generator_fn(str(folder), truncation=0.3)(prompts, 5)
    expected = torch.cat([t2i([p], n=1, seed=image_seed(5, i), truncation=0.3) for i, p in enumerate(prompts)])
    torch.testing.assert_close(truncated, expected, rtol=0, atol=1e-5)  # prompts embedded in one batch there
    plain = generator_fn(str(folder))(prompts, 5)
    own = torch.cat([t2i([p], n=1, seed=image_seed(5, i)) for i, p in enumerate(prompts)])
    torch.testing.assert_close(plain, own, rtol=0, atol=1e-5)
    assert not torch.allclose(plain, truncated)


def test_evaluate_refuses_a_non_positive_truncation(capsys):
    assert main(["evaluate", "--model", "fashion-mnist", "--data", "fashion-mnist", "--truncation", "0",
                 "--n", "8", "--no-progress"]) != 0
    assert "--truncation must be positive" in capsys.readouterr().err


def test_evaluation_report_lists_all_correct_by_kind():
    from wordcanvas.metrics.evaluate import to_markdown

    probe = {"all_correct": 0.5, "per_attribute": {"digit1": {"accuracy": 1.0, "count": 2}},
             "all_correct_by_kind": {"one digit": {"all_correct": 1.0, "count": 1},
                                     "two digits in a relation": {"all_correct": 0.0, "count": 1}}}
    text = to_markdown({"dataset": "captioned-mnist", "kind": "generator", "n": 2, "protocol": "p", "probe": probe})
    assert "| probe: all right, one digit (n=1) | 1 |" in text
    assert "| probe: all right, two digits in a relation (n=1) | 0 |" in text
