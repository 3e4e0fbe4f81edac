"""Text encoders: SmolLM2 (decoder LLM), MiniLM (sentence encoder), the trainable baseline, the cache."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from wordcanvas import assets, cli
from wordcanvas.text import (ENCODER_NAMES, CachedEncoder, HFEncoder, MiniLMEncoder, SmolLM2Encoder, TrainableEncoder,
                             load_encoder)
from wordcanvas.text.cache import text_key
from wordcanvas.text.trainable import CLS, UNK, build_vocab

TEXTS = ["a woman wearing a hat", "a young man with a thick beard and round glasses", "a sneaker"]
CAPTIONS = ["a red shirt", "a blue shirt", "a red dress with stripes", "a blue dress", "a shirt with stripes", "a hat"]

# (caption, paraphrase, unrelated): the paraphrase must be the closer one
TRIPLES = [
    ("a middle-aged woman wearing a hat", "a lady in her forties with a hat on", "a pair of trousers"),
    ("a man with a thick beard", "a bearded guy", "a sandal with thin straps"),
    ("a smiling young girl", "a little girl who is smiling", "a winter coat with a hood"),
    ("an elderly man with white hair", "an old gentleman whose hair is white", "a handbag made of leather"),
    ("a sneaker", "a running shoe", "a woman with red lipstick"),
    ("a long evening dress", "a full-length gown", "a bald man wearing glasses"),
    ("the digit four in the middle", "a 4 in the centre", "a knitted pullover"),
]


@pytest.fixture(scope="session")
def minilm():
    return MiniLMEncoder()


@pytest.fixture(scope="session")
def smollm2():
    """The cached-copy encoder, plus the direct GGUF load's embeddings of TEXTS.

    The GGUF is read once per session; on a fresh machine this same load writes the cached
    copy, so the comparison always checks the copy that later loads use.
    """
    direct = SmolLM2Encoder.from_gguf()
    direct.save_converted()  # no-op when the copy exists
    reference = direct.encode(TEXTS)
    del direct
    return SmolLM2Encoder(), reference


@pytest.fixture(scope="session")
def trainable():
    return TrainableEncoder.build(CAPTIONS, min_count=1, dim=64, depth=2, heads=4)


@pytest.fixture(params=["minilm", "smollm2", "trainable"])
def encoder(request):
    value = request.getfixturevalue(request.param)
    return value[0] if request.param == "smollm2" else value


def real_token_counts(encoder, texts):
    """Token counts from each encoder's own tokenizer (independent of its encode path)."""
    if isinstance(encoder, TrainableEncoder):
        return [1 + len(t.split()) for t in texts]  # [CLS] + words (TEXTS have no punctuation)
    if isinstance(encoder, SmolLM2Encoder):
        return [len(encoder.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return [len(encoder.tokenizer(t)["input_ids"]) for t in texts]  # BERT: with [CLS] and [SEP]


def test_shapes_and_mask(encoder):
    emb = encoder.encode(TEXTS)
    assert emb.tokens.shape == (3, encoder.max_tokens, encoder.dim)
    assert emb.pooled.shape == (3, encoder.dim) and emb.mask.dtype == torch.bool
    counts = real_token_counts(encoder, TEXTS)
    for i, n in enumerate(counts):
        assert emb.mask[i, :n].all() and not emb.mask[i, n:].any()
    assert (emb.tokens[~emb.mask] == 0).all()  # padding carries nothing
    assert emb.tokens[emb.mask].abs().sum(-1).gt(0).all()
    assert torch.isfinite(emb.pooled).all()
    if not isinstance(encoder, TrainableEncoder):
        torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(3))


def test_deterministic_and_batch_invariant(encoder):
    alone = encoder.encode([TEXTS[2]])
    again = encoder.encode([TEXTS[2]])
    assert torch.equal(alone.pooled, again.pooled) and torch.equal(alone.tokens, again.tokens)
    batched = encoder.encode(TEXTS)[2:]
    assert (alone.pooled - batched.pooled).abs().max() < 1e-5
    assert torch.equal(alone.mask, batched.mask)
    torch.testing.assert_close(alone.tokens, batched.tokens, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_paraphrases_land_closer_than_unrelated(name, request):
    enc = request.getfixturevalue(name)
    enc = enc[0] if name == "smollm2" else enc
    emb = enc.encode([t for triple in TRIPLES for t in triple]).pooled.view(len(TRIPLES), 3, -1)
    cos = torch.nn.functional.cosine_similarity
    para, unrelated = cos(emb[:, 0], emb[:, 1], dim=-1), cos(emb[:, 0], emb[:, 2], dim=-1)
    assert (para > unrelated).all(), (para, unrelated)


def test_smollm2_cached_copy_matches_gguf(smollm2):
    cached, reference = smollm2
    assert (smollm2_folder := cached.converted).joinpath("model.safetensors").exists()
    assert "quantization_config" not in json.loads((smollm2_folder / "config.json").read_text())
    emb = cached.encode(TEXTS)
    assert torch.equal(emb.mask, reference.mask)
    torch.testing.assert_close(emb.pooled, reference.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.tokens, reference.tokens, atol=1e-4, rtol=1e-5)
    assert cached.dim == 576 and cached.name == "smollm2"
    assert round(cached.num_parameters() / 1e6, 1) == 134.5  # SmolLM2-135M without its (tied) output head


def test_trainable_vocabulary_and_unknown_words():
    vocab = build_vocab(["A red shirt.", "a RED dress", "a hat"], min_count=2)
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "a", "red"]  # counts: a=3, red=2; others once
    enc = TrainableEncoder.build(["A red shirt.", "a RED dress", "a hat"], min_count=2, dim=32, depth=2, heads=2)
    a, red = vocab.index("a"), vocab.index("red")
    assert enc.token_ids("A red, purple DRESS!") == [CLS, a, red, UNK, UNK]
    assert len(enc.token_ids(" ".join(["red"] * 100))) == enc.max_tokens


def test_trainable_gradients_flow_through_forward(trainable):
    trainable.train()
    out = trainable(["a red shirt", "a blue dress with stripes"])
    assert out.pooled.requires_grad and out.tokens.shape[1] == trainable.max_tokens
    target = torch.randn_like(out.pooled)
    ((out.pooled - target) ** 2).mean().backward()
    used = trainable.token_ids("a red shirt") + trainable.token_ids("a blue dress with stripes")
    grads = trainable.token_emb.weight.grad
    assert grads[used].abs().sum(-1).gt(0).all()
    assert grads[trainable.config.vocab.index("hat")].abs().sum() == 0  # not in the batch
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.blocks.parameters())
    trainable.zero_grad()
    emb = trainable.encode(["a red shirt"])  # inference: no graph, dropout off, mode restored
    assert not emb.pooled.requires_grad and trainable.training
    trainable.eval()


def test_trainable_save_load_round_trip(trainable, tmp_path):
    trainable.eval()
    trainable.save_pretrained(tmp_path / "enc")
    loaded = load_encoder(str(tmp_path / "enc"))
    assert isinstance(loaded, TrainableEncoder) and loaded.config == trainable.config
    torch.testing.assert_close(loaded.encode(TEXTS).pooled, trainable.encode(TEXTS).pooled, atol=0, rtol=0)
    assert loaded.identity() == trainable.identity()
    with torch.no_grad():
        loaded.norm.weight.add_(0.1)
    assert loaded.identity() != trainable.identity()  # cache keys follow the weights


def test_cache_hits_misses_and_identical_outputs(minilm, tmp_path):
    cached = CachedEncoder(minilm, cache_root=tmp_path)
    assert (cached.name, cached.dim, cached.max_tokens) == (minilm.name, minilm.dim, minilm.max_tokens)
    first = cached.encode([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert cached.stats()["misses"] == 2 and cached.stats()["hits"] == 0
    second = cached.encode([TEXTS[1], TEXTS[2]])
    assert cached.stats()["hits"] == 1 and cached.stats()["misses"] == 3

    reference = minilm.encode([TEXTS[0], TEXTS[1], TEXTS[0]])
    for got in (first, CachedEncoder(minilm, cache_root=tmp_path).encode([TEXTS[0], TEXTS[1], TEXTS[0]])):
        assert torch.equal(got.mask, reference.mask)
        torch.testing.assert_close(got.pooled, reference.pooled, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.tokens, reference.tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(second.pooled, minilm.encode(TEXTS[1:]).pooled, atol=1e-5, rtol=0)

    fresh = CachedEncoder(minilm, cache_root=tmp_path)  # a new process: everything from disk
    fresh.encode(TEXTS)
    assert fresh.stats()["disk_hits"] == 3 and fresh.stats()["misses"] == 0
    with pytest.raises(ValueError, match="must not be cached"):
        CachedEncoder(TrainableEncoder.build(CAPTIONS, min_count=1, dim=32, depth=1, heads=2))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_cache_detects_and_rebuilds_corrupt_entries(minilm, tmp_path, caplog, damage):
    cached = CachedEncoder(minilm, cache_root=tmp_path)
    good = cached.encode(TEXTS)
    path = cached.cache.path(text_key(TEXTS[1]))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0xFF  # one byte of the stored floats
    path.write_bytes(bytes(data))

    reread = CachedEncoder(minilm, cache_root=tmp_path)
    with caplog.at_level(logging.WARNING, logger="wordcanvas.text.cache"):
        again = reread.encode(TEXTS)
    assert "corrupt" in caplog.text and path.name in caplog.text
    assert reread.stats()["corrupt"] == 1 and reread.stats()["misses"] == 1 and reread.stats()["disk_hits"] == 2
    torch.testing.assert_close(again.pooled, good.pooled, atol=1e-5, rtol=0)
    healed = CachedEncoder(minilm, cache_root=tmp_path)
    healed.encode(TEXTS)
    assert healed.stats()["disk_hits"] == 3 and healed.stats()["corrupt"] == 0


def test_load_encoder_names_folders_and_errors(minilm):
    assert ENCODER_NAMES == ("smollm2", "minilm", "trainable")
    built = load_encoder("trainable", captions=CAPTIONS)
    assert isinstance(built, TrainableEncoder) and "stripes" in built.config.vocab
    with pytest.raises(ValueError, match="captions"):
        load_encoder("trainable")
    with pytest.raises(ValueError, match=r"unknown text encoder 'clip'.*smollm2, minilm, trainable"):
        load_encoder("clip")
    generic = load_encoder(str(assets.minilm_folder()))  # a plain Hugging Face folder
    assert type(generic) is HFEncoder
    torch.testing.assert_close(generic.encode(TEXTS).pooled, minilm.encode(TEXTS).pooled, atol=0, rtol=0)


def test_encoders_cli_json(capsys):
    assert cli.main(["encoders", "--names", "minilm,trainable", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["encoders"]}
    assert set(rows) == {"minilm", "trainable"} and report["machine"]["threads"] >= 1
    assert rows["minilm"]["dim"] == 384 and rows["minilm"]["parameters"] == 22_713_216  # the published 22.7M
    assert rows["minilm"]["kind"] == "sentence encoder" and rows["trainable"]["kind"] == "from scratch"
    for r in rows.values():
        assert r["load_s"] > 0 and r["ms_per_prompt_b1"] > 0 and r["ms_per_prompt_b64"] > 0
        assert 0 <= r["paraphrase_triplet_acc"] <= 1
    assert cli.main(["encoders", "--names", "nope"]) == 2
