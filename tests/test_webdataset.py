"""WebDataset tar shards: `wordcanvas data pack`, the map-style reader the loop trains from, and the
streaming reader split across 2 ranks x 2 workers with every sample seen exactly once per epoch."""
from __future__ import annotations

import tarfile
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from test_train_loop import ColourSquares, HashEncoder, tiny_config
from wordcanvas.data import dataset_kind, load_dataset
from wordcanvas.data.folder import CaptionFolder
from wordcanvas.data.webdataset import ShardDataset, shard_stream
from wordcanvas.utils.io import tensor_to_pil

N, PER_SHARD = 40, 5  # 8 shards: 2 per (rank, worker)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A caption folder of coloured squares, packed with the CLI."""
    from wordcanvas.cli import main

    root = tmp_path_factory.mktemp("wds")
    folder, shards = root / "images", root / "shards"
    folder.mkdir()
    data = ColourSquares(n=N, resolution=16)
    for i in range(N):
        tensor_to_pil(data.image(i)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("\n".join(data.captions(i)) + "\n")
    assert main(["data", "pack", str(folder), "--out", str(shards), "--res", "16", "--per-shard", str(PER_SHARD)]) == 0
    return folder, shards


def test_pack_writes_shards_that_read_back_exactly(packed):
    folder, shards = packed
    tars = sorted(shards.glob("*.tar"))
    assert len(tars) == N // PER_SHARD
    with tarfile.open(tars[0]) as tar:  # the WebDataset layout: KEY.ext members, grouped by key
        assert sorted(tar.getnames()) == sorted(f"{k:09d}.{e}" for k in range(PER_SHARD) for e in ("png", "txt", "json"))
    assert dataset_kind(str(shards)) == "shards"
    source = CaptionFolder(folder, resolution=16, progress=False)
    for name in (str(shards), str(shards / "shard-{000000..000007}.tar")):  # folder or brace pattern
        ds = load_dataset(name)
        assert isinstance(ds, ShardDataset) and len(ds) == N and ds.resolution == 16 and ds.channels == 3
        for i in (0, 17, N - 1):
            assert torch.equal(ds.image(i), source.image(i))  # PNG is lossless
            assert ds.captions(i) == source.captions(i)
    with pytest.raises(FileExistsError, match="already holds"):
        from wordcanvas.cli import main

        main(["data", "pack", str(folder), "--out", str(shards)])


def test_stream_split_over_2_ranks_x_2_workers_sees_every_sample_once(packed):
    _, shards = packed
    for epoch in range(2):
        seen: Counter = Counter()
        per_rank = []
        for rank in range(2):
            stream = shard_stream(shards, rank=rank, world=2)
            keys = [s["key"] for s in DataLoader(stream, batch_size=None, num_workers=2)]
            per_rank.append(set(keys))
            seen.update(keys)
        assert sorted(seen) == [f"{k:09d}" for k in range(N)], f"epoch {epoch}: gaps"
        assert set(seen.values()) == {1}, f"epoch {epoch}: duplicates"
        assert len(per_rank[0]) == len(per_rank[1]) == N // 2
    sample = next(iter(shard_stream(shards, rank=0, world=1)))
    assert sample["image"].shape == (3, 16, 16) and sample["caption"].endswith(("square", "block", "box"))


def test_training_reads_shards_and_damaged_shards_are_refused(packed, tmp_path):
    from wordcanvas.train import train

    _, shards = packed
    result = train(tiny_config(tmp_path / "run", data=str(shards), steps=2, ckpt_every=0), encoder=HashEncoder())
    assert result.step == 2 and len(result.family.modules["generator"].state_dict()) > 0
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (shards / "shard-000000.tar").read_bytes()
    (broken / "shard-000000.tar").write_bytes(data[:700])  # cut inside the first member
    with pytest.raises(ValueError, match="shard-000000.tar is not a readable tar file"):
        load_dataset(str(broken))
    with pytest.raises(ValueError, match="no .tar shards"):
        load_dataset(str(tmp_path / "nothing-{0..3}.tar"))
