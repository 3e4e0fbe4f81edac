"""A tiny trained text-to-image run shared by the pipeline, server, export and browser tests.

`tiny_run(tmp_path_factory)` trains once per pytest session (a few steps of a 16 px GAN with the
"trainable" encoder, so the run folder is loadable by path alone) and returns the run folder;
later calls reuse it from the session's base temp folder.
"""
from __future__ import annotations

from pathlib import Path

import torch

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
NAMES = list(COLOURS)


class Squares(CaptionedDataset):
    """A coloured square on a dark background; the caption names the colour."""

    channels, name = 3, "squares"
    label_spec = LabelSpec({"colour": NAMES})

    def __init__(self, n: int = 48, resolution: int = 16, seed: int = 0):
        super().__init__(seed)
        self.n, self.resolution = n, resolution

    def __len__(self):
        return self.n

    def image(self, i):
        g = torch.Generator().manual_seed(i)
        r, s = self.resolution, self.resolution // 2
        img = torch.full((3, r, r), -0.7) + 0.05 * torch.randn(3, r, r, generator=g)
        y, x = torch.randint(0, r - s + 1, (2,), generator=g).tolist()
        img[:, y:y + s, x:x + s] = torch.tensor(COLOURS[NAMES[i % 3]])[:, None, None]
        return img.clamp(-1, 1)

    def captions(self, i):
        c = NAMES[i % 3]
        return [f"a {c} square", f"a small {c} box"]

    def labels(self, i):
        return {"colour": i % 3}

    def eval_prompts(self, n, seed=0, heldout=False):
        return [Prompt(f"a {NAMES[k % 3]} square", {"colour": k % 3}) for k in range(n)]


def tiny_run(tmp_path_factory) -> Path:
    """Run folder of a 4-step 16 px GAN (with cross-attention, so tokens and mask matter)."""
    from wordcanvas.train import TrainConfig, train

    run = tmp_path_factory.getbasetemp() / "tiny-t2i-run"
    if (run / "final" / "model.json").exists():
        return run
    cfg = TrainConfig(family="gan", data="squares", encoder="trainable", resolution=16, out=str(run), steps=4,
                      batch=8, log_every=2, sample_every=0, ckpt_every=0, progress=False, threads=1,
                      sample_prompts=3, sample_per_prompt=1,
                      model={"generator": {"ngf": 8, "max_channels": 32, "cond_dim": 16, "z_dim": 8,
                                           "attn_resolutions": [8]},
                             "discriminator": {"ndf": 8, "max_channels": 32, "cond_dim": 16}})
    train(cfg, dataset=Squares())
    return run


def tiny_upscaler_dir(tmp_path_factory) -> Path:
    """An untrained FastSR x4 model folder (weights random but fixed): a real network to export."""
    from wordcanvas.models.sr import FastSR, FastSRConfig

    folder = tmp_path_factory.getbasetemp() / "tiny-fastsr-x4"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model = FastSR(FastSRConfig(scale=4, feat=12, mid=6, num_maps=1))
        with torch.no_grad():
            model.to_subpixels.weight.mul_(10)  # undo the near-bicubic start so the network's part shows
        model.save_pretrained(folder)
    return folder
