"""Building blocks shared by the text-conditioned generators (GAN, VAE decoder) and critics.

Conditioning enters in two ways:
- a condition vector (pooled text, optionally with noise) drives per-channel scale and shift
  (`Affine`, DF-GAN's "deep text-image fusion", or `ModulatedNorm`, FiLM on normalised features);
- token states attend through `CrossAttention` (masked), for compositional captions where
  word order and several attributes matter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 (same values as F.interpolate(mode="nearest"); several times faster on CPU)."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


def standardize(states: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the feature dimension (LayerNorm without parameters)."""
    return F.layer_norm(states, states.shape[-1:])


class TextProjection(nn.Module):
    """Maps any encoder's states (dim 128, 384, 576...) to the model's conditioning size.

    Standardised first: encoders differ wildly in scale (L2-normalised sentence vectors with
    entries ~0.05 vs raw LLM hidden states with a few huge channels); on a common scale every
    encoder works with the same learning rates and gradient penalties.
    """

    def __init__(self, text_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, out_dim)

    def forward(self, states: torch.Tensor, standardized: bool = False) -> torch.Tensor:
        return self.proj(states if standardized else standardize(states))


class Affine(nn.Module):
    """Per-channel scale and shift predicted from a condition vector; starts as the identity."""

    def __init__(self, cond_dim: int, channels: int, hidden: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[-1].weight)
        with torch.no_grad():
            self.mlp[-1].bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels)]))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.mlp(cond)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(beta, x, gamma)


class ModulatedNorm(nn.Module):
    """FiLM on instance-normalised features (AdaIN-like)."""

    def __init__(self, cond_dim: int, channels: int, hidden: int = 128):
        super().__init__()
        self.affine = Affine(cond_dim, channels, hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.affine(F.instance_norm(x, eps=1e-5), cond)


class Fusion(nn.Module):
    """One conditioning step before a convolution.

    "affine": DF-GAN's DFBlock (affine, LeakyReLU, affine, LeakyReLU; stacked affines make the
    text-image fusion deeper); "film": modulated instance norm then LeakyReLU.
    """

    def __init__(self, cond_dim: int, channels: int, mode: str = "affine", hidden: int = 128):
        super().__init__()
        if mode not in ("affine", "film"):
            raise ValueError(f"fusion must be 'affine' or 'film', got {mode!r}")
        self.mode = mode
        if mode == "affine":
            self.a0, self.a1 = Affine(cond_dim, channels, hidden), Affine(cond_dim, channels, hidden)
        else:
            self.norm = ModulatedNorm(cond_dim, channels, hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.mode == "affine":
            return lrelu(self.a1(lrelu(self.a0(x, cond)), cond))
        return lrelu(self.norm(x, cond))


def _upsampled_kernel(w: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) kernel -> (in, out, 4, 4) transposed-conv kernel (see UpConv3x3). Along each
    axis, taps (a, b, c) of the 3x3 kernel become (c, b + c, a + b, a)."""
    w = torch.stack([w[..., 2, :], w[..., 1, :] + w[..., 2, :], w[..., 0, :] + w[..., 1, :], w[..., 0, :]], dim=-2)
    w = torch.stack([w[..., 2], w[..., 1] + w[..., 2], w[..., 0] + w[..., 1], w[..., 0]], dim=-1)
    return w.transpose(0, 1)


class UpConv3x3(nn.Conv2d):
    """A 3x3 convolution (padding 1) that can also run on the x2 nearest-upsampled input without
    materialising it: `upsampled(x) == self(upsample2x(x))`, computed as one stride-2 transposed 4x4
    convolution on x, so each output pixel costs 4 taps instead of 9 (2-3x faster on CPU). Without
    gradients the 4x4 kernel is cached until the weights change."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, 3, 1, 1)
        self._cached: tuple | None = None

    def upsampled_weight(self) -> torch.Tensor:
        w = self.weight
        # Cached only where no graph is recorded: a kernel cached under inference_mode cannot be
        # saved for a backward pass (e.g. GAN inversion, which differentiates through frozen weights).
        if torch.is_grad_enabled():
            return _upsampled_kernel(w)
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, _upsampled_kernel(w.detach()).contiguous())
        return self._cached[1]

    def upsampled(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.upsampled_weight().to(x.dtype), self.bias, stride=2, padding=1)


class UpBlock(nn.Module):
    """DF-GAN generator block: upsample x2, then two conditioned 3x3 convolutions with a shortcut.

    Nearest upsampling commutes with per-pixel operations, so the shortcut (1x1 conv) and the first
    fusion run at the input size, and the first convolution absorbs the upsampling (UpConv3x3);
    the block computes conv2(fuse2(conv1(fuse1(up(x))))) + shortcut(up(x)), up to float rounding.
    """

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, fusion: str = "affine", upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.fuse1, self.conv1 = Fusion(cond_dim, in_ch, fusion), UpConv3x3(in_ch, out_ch)
        self.fuse2, self.conv2 = Fusion(cond_dim, out_ch, fusion), nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip, h = self.shortcut(x), self.fuse1(x, cond)
        if self.upsample:
            skip, h = upsample2x(skip), self.conv1.upsampled(h)
        else:
            h = self.conv1(h)
        return self.conv2(self.fuse2(h, cond)).add_(skip)


class CrossAttention(nn.Module):
    """Image positions attend to (masked) text tokens; the output projection starts at zero so
    the layer begins as the identity and the pooled-text path trains first.

    With `positions` (the side of the square feature map it will see), each position's query also
    carries a learned position vector, so a position can look for the tokens that name it ("at the
    bottom right") even where the features are alike everywhere; without it, queries know where
    they are only through what the convolutions have drawn there."""

    def __init__(self, channels: int, token_dim: int, heads: int = 4, head_dim: int = 32, positions: int = 0):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm = nn.GroupNorm(min(32, channels) if channels % min(32, channels) == 0 else 1, channels)
        # unit scale, like the normalised features they are added to, so they count from the first step
        self.positions = nn.Parameter(torch.randn(positions * positions, channels)) if positions > 0 else None
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_kv = nn.Linear(token_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        queries = self.norm(x).flatten(2).transpose(1, 2)                     # (B, HW, C)
        if self.positions is not None:
            if self.positions.shape[0] != h * w:
                raise ValueError(f"this layer has positions for {self.positions.shape[0]} places, got a {h}x{w} map")
            queries = queries + self.positions
        q = self.to_q(queries)
        k, v = self.to_kv(tokens).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        attn_mask = None
        if mask is not None:
            mask = mask.bool()
            mask = mask | ~mask.any(dim=1, keepdim=True)  # a row with no real token attends to all (no NaN)
            attn_mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.to_out(out.transpose(1, 2).flatten(2))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class TokenPool(nn.Module):
    """Attention pooling of a caption's token states into one conditioning vector: each of `queries`
    learned queries gathers, by one-head attention, what the tokens say about it, and a linear layer
    maps the gathered slots to `out_dim`. A masked mean of the tokens (a sentence encoder's pooled
    vector) nearly loses which word goes with which ("a 3 on the left and a 7 on the right" and its
    swap pool alike); a query can attend to the tokens that name one place and read the digit bound
    to them (benchmarks/text_binding.py). The output layer starts at zero: a model begins as without it."""

    def __init__(self, text_dim: int, out_dim: int, queries: int, width: int = 32):
        super().__init__()
        self.width = width
        self.kv = TextProjection(text_dim, 2 * width)
        self.queries = nn.Parameter(torch.randn(queries, width))
        self.out = nn.Linear(queries * width, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(tokens).chunk(2, dim=-1)                                 # (B, T, w)
        mask = mask.bool()
        mask = mask | ~mask.any(dim=1, keepdim=True)  # a row with no real token attends to all (no NaN)
        scores = torch.einsum("qw,btw->bqt", self.queries.to(k.dtype), k) / self.width ** 0.5
        attention = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
        return self.out(torch.einsum("bqt,btw->bqw", attention, v).flatten(1))


class TokenRefiner(nn.Module):
    """Trainable self-attention over a caption's (projected) token states, before an image reads them.

    A frozen encoder's token state for "3" in "a 3 left of a 7" and in "a 7 left of a 3" differ
    little, so an image position's cross-attention query can find the digits and the place words but
    hardly which digit a place word belongs to (benchmarks/text_binding.py: 0.67 of relation captions
    read right from MiniLM tokens). A few pre-norm Transformer layers let the tokens exchange that
    first. Sinusoidal positions enter each layer's normalised input only, and every layer's output
    projections start at zero, so the refiner begins as the identity and a model starts where it
    would without it. Attention through scaled_dot_product_attention, as in CrossAttention, so the
    layer exports to ONNX."""

    def __init__(self, dim: int, layers: int = 1, heads: int = 4, hidden: int = 2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the token size {dim} must be a multiple of the heads ({heads})")
        self.heads = heads
        self.attn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.attn_out = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.mlp_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden * dim), nn.GELU(), nn.Linear(hidden * dim, dim))
                                  for _ in range(layers))
        for out in [*self.attn_out, *(mlp[-1] for mlp in self.mlps)]:
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    @staticmethod
    def sinusoids(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
        position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
        angles = position * freq                                                # (T, ceil(dim / 2))
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dim]
        return table.to(dtype)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        positions = self.sinusoids(tokens.shape[1], tokens.shape[2], tokens.device, tokens.dtype)
        attn_mask = None
        if mask is not None:
            mask = mask.bool()
            mask = mask | ~mask.any(dim=1, keepdim=True)  # a row with no real token attends to all (no NaN)
            attn_mask = mask[:, None, None, :]
        x = tokens
        for attn_norm, qkv, attn_out, mlp_norm, mlp in zip(self.attn_norms, self.qkv, self.attn_out,
                                                            self.mlp_norms, self.mlps):
            q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2)
                       for t in qkv(attn_norm(x + positions)).chunk(3, dim=-1))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            x = x + attn_out(out.transpose(1, 2).flatten(2))
            x = x + mlp(mlp_norm(x))
        return x


class DownBlock(nn.Module):
    """DF-GAN discriminator block: residual path (4x4 stride-2 conv, 3x3 conv) gated by a learned
    scalar (DF-GAN starts it at zero), plus a 1x1-conv shortcut of the average-pooled input (pooling
    first: both are linear and per-pixel, so the order does not matter and this is 4x cheaper)."""

    def __init__(self, in_ch: int, out_ch: int, gain: float = 0.0):
        super().__init__()
        self.conv_r = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.gamma = nn.Parameter(torch.full((1,), float(gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(F.avg_pool2d(x, 2)) + self.gamma * self.conv_r(x)


def channels_at(resolution: int, size: int, base: int, cap: int) -> int:
    """Width at feature size `size` for a network whose full size is `resolution`: `base` at full
    size, doubling each halving, capped (so compute per block stays roughly constant)."""
    return min(cap, base * (resolution // size))


def check_resolution(resolution: int) -> int:
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return resolution


class RegionPrior(nn.Module):
    """A caption's picture as a square grid of region states, predicted from its token states alone.

    One learned query per region reads the tokens through a small Transformer decoder (self-attention
    among the regions, so two places can settle which thing each takes; cross-attention to the
    tokens, which carry sinusoidal positions so that even context-free token states say which word
    follows which). Trained to match the region states an image model computes from the real image
    of the caption, it learns which thing is where from (image, caption) pairs alone: a generator's
    images are not in the way, so a caption and its swap are told apart by real data, not by a judge
    whose signal must pass through the generator (benchmarks/region_prior.py).

    A caption that leaves places open ("the 1 is above the 7": anywhere in the grid) has many real
    layouts, and one prediction under a squared error is their blurred average. With hypotheses > 1
    the prior makes that many predictions, each from its own learned offset to the queries, and
    learns them by relaxed winner-takes-all (Rupprecht et al., 2017: the prediction nearest the real
    layout takes most of the loss), so each becomes one sharp layout; a generator picks one per
    noise vector."""

    def __init__(self, text_dim: int, dim: int, regions: int = 64, layers: int = 2, heads: int = 4,
                 hypotheses: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the region size {dim} must be a multiple of the heads ({heads})")
        if hypotheses < 1:
            raise ValueError(f"hypotheses must be >= 1, got {hypotheses}")
        self.heads, self.hypotheses = heads, hypotheses
        self.project = TextProjection(text_dim, dim)
        self.queries = nn.Parameter(torch.randn(regions, dim))
        # different from the start, so the hypotheses can split the layouts between them
        self.offsets = nn.Parameter(torch.randn(hypotheses, dim)) if hypotheses > 1 else None
        norms = lambda: nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))  # noqa: E731
        linears = lambda out: nn.ModuleList(nn.Linear(dim, out) for _ in range(layers))  # noqa: E731
        self.self_norms, self.self_qkv, self.self_out = norms(), linears(3 * dim), linears(dim)
        self.cross_norms, self.cross_q, self.cross_kv, self.cross_out = norms(), linears(dim), linears(2 * dim), linears(dim)
        self.memory_norm = nn.LayerNorm(dim)
        self.mlp_norms = norms()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                  for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
        # scaled_dot_product_attention rather than nn.MultiheadAttention, whose inference path does not export
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, choice: torch.Tensor | None = None) -> torch.Tensor:
        """(B, regions, dim) from (B, T, text_dim) token states and their (B, T) mask: with several
        hypotheses, the one `choice` (B,) names for each caption, or all of them, (B, hypotheses,
        regions, dim), without a choice."""
        batch = tokens.shape[0]
        if self.offsets is not None and choice is None:
            every = torch.arange(self.hypotheses, device=tokens.device).repeat(batch)
            out = self(tokens.repeat_interleave(self.hypotheses, 0), mask.repeat_interleave(self.hypotheses, 0), every)
            return out.unflatten(0, (batch, self.hypotheses))
        mask = mask.bool()
        mask = mask | ~mask.any(dim=1, keepdim=True)  # a row with no real token attends to all
        memory = self.project(tokens)
        memory = self.memory_norm(memory + TokenRefiner.sinusoids(memory.shape[1], memory.shape[2], memory.device,
                                                                  memory.dtype))
        x = self.queries.to(memory.dtype).expand(batch, -1, -1)
        if self.offsets is not None:
            x = x + self.offsets.to(memory.dtype)[choice][:, None, :]
        for i in range(len(self.mlps)):
            x = x + self.self_out[i](self.attend(*self.self_qkv[i](self.self_norms[i](x)).chunk(3, dim=-1)))
            k, v = self.cross_kv[i](memory).chunk(2, dim=-1)
            x = x + self.cross_out[i](self.attend(self.cross_q[i](self.cross_norms[i](x)), k, v, mask[:, None, None, :]))
            x = x + self.mlps[i](self.mlp_norms[i](x))
        return self.out(self.norm(x))

    def loss(self, tokens: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, relax: float = 0.05) -> torch.Tensor:
        """Mean squared error to the (B, regions, dim) target regions; with several hypotheses the
        relaxed winner-takes-all form: per caption, 1 - relax of the weight on the nearest prediction
        and relax shared by the others (which keeps every hypothesis learning)."""
        predicted = self(tokens, mask).float()  # the targets are fp32 (autocast may give bf16)
        if self.offsets is None:
            return F.mse_loss(predicted, target)
        errors = (predicted - target[:, None]).square().mean((2, 3))  # (B, hypotheses)
        winner = F.one_hot(errors.argmin(1), self.hypotheses).to(errors.dtype)
        weights = winner * (1 - relax) + (1 - winner) * relax / (self.hypotheses - 1)
        return (weights * errors).sum(1).mean()

    @staticmethod
    def choose(z: torch.Tensor, hypotheses: int) -> torch.Tensor:
        """Which hypothesis a noise vector draws: its first coordinate's normal quantile, cut into
        equal parts (every hypothesis equally likely, and fixed by the noise, so a seed is a picture)."""
        quantile = 0.5 * (1 + torch.erf(z[:, 0] / math.sqrt(2)))
        return (quantile * hypotheses).long().clamp(0, hypotheses - 1)
