"""Seeded noise, one CPU generator per batch item.

Noise is drawn on the CPU from one ``torch.Generator`` per batch item and only then moved to the
model's device and dtype. The same seed therefore gives the same result on CPU, CUDA or MPS, and an
item's noise does not depend on what else is in the batch (a batch of two equals two singles).
Independent streams (the sampler's noise, the re-noising of the kept region, each repeat) are derived
from the item seed with a hash, so adding a stream never shifts another.
"""

from __future__ import annotations

import hashlib
import operator
from typing import Sequence

import torch

_SEED_MASK = (1 << 63) - 1


def derive_seed(seed: int, *stream: int | str) -> int:
    """A 63-bit seed for a named sub-stream of ``seed`` (stable across runs and platforms)."""
    if not stream:
        return int(seed) & _SEED_MASK
    key = repr((int(seed), *stream)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & _SEED_MASK


def normalize_seeds(seed: int | Sequence[int], batch_size: int) -> list[int]:
    """One seed per item: an int ``s`` gives ``s, s+1, …`` (like a batch of single runs); a list is used as is."""
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an integer or a list of {batch_size} integers, got {seed!r}")
    if isinstance(seed, (list, tuple)):
        if len(seed) != batch_size:
            raise ValueError(f"seed list has {len(seed)} entries but the batch has {batch_size} items")
        try:
            return [operator.index(s) for s in seed]
        except TypeError:
            raise ValueError(f"seed list must hold integers, got {seed!r}") from None
    try:
        base = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be an integer or a list of {batch_size} integers, got {seed!r}") from None
    return [base + i for i in range(batch_size)]


class NoiseSource:
    """Standard-normal noise shaped like one batch, from per-item seeded CPU generators.

    Calling it as ``noise(sigma, sigma_next)`` (the sampler's ``noise_sampler`` signature) returns the
    next draw; the σ arguments are ignored by this i.i.d. source but let replaying sources (Cycle-SDE)
    key on the step.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        stream: int | str | None = None,
    ):
        shape = tuple(int(s) for s in shape)
        if len(seeds) != shape[0]:
            raise ValueError(f"NoiseSource needs one seed per batch item: {len(seeds)} seeds for batch {shape[0]}")
        self.seeds = [int(s) for s in seeds]
        self.shape = shape
        self.device = torch.device(device)
        self.dtype = dtype
        self.stream = stream
        self._generators = []
        self._block = self._cursor = 0
        self._buffer: torch.Tensor | None = None
        for s in self.seeds:
            g = torch.Generator(device="cpu")
            g.manual_seed(derive_seed(s, stream) if stream is not None else derive_seed(s))
            self._generators.append(g)

    @classmethod
    def like(cls, x: torch.Tensor, seeds: Sequence[int], stream: int | str | None = None) -> "NoiseSource":
        return cls(seeds, x.shape, x.device, x.dtype, stream)

    def draw(self) -> torch.Tensor:
        """The next standard-normal tensor of the batch's shape (float32 on CPU, then cast and moved).

        Each item's generator fills a block of several future draws at once (a fixed block size, so
        results never depend on the batch); this keeps large batches from paying Python overhead per
        item and step.
        """
        if self._cursor == self._block:
            per_item = int(torch.Size(self.shape[1:]).numel())
            self._block = max(1, min(8, (1 << 21) // max(per_item, 1)))
            self._buffer = torch.stack(
                [torch.randn((self._block, *self.shape[1:]), generator=g, dtype=torch.float32) for g in self._generators],
                dim=1,
            )
            self._cursor = 0
        out = self._buffer[self._cursor]
        self._cursor += 1
        return out.to(device=self.device, dtype=self.dtype)

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        return self.draw()

    def spawn(self, stream: int | str) -> "NoiseSource":
        """An independent source for a named sub-stream of the same per-item seeds."""
        name = stream if self.stream is None else f"{self.stream}/{stream}"
        return NoiseSource(self.seeds, self.shape, self.device, self.dtype, name)
