"""Independent random streams, one per purpose, all derived from a run's seed.

A run's seed k feeds several generators (the flow's initialisation, the data order, the training rotations...).
Deriving them as k, k + 1, k + 2 made streams of neighbouring seeds coincide: seed 0's training rotations were
seed 1's flow initialisation. Each stream is now `np.random.SeedSequence(k, spawn_key=(crc32(purpose),))`, so two
(seed, purpose) pairs never share a stream, and no stream depends on the variant: runs of DifferNet, SE and CBAM
with one seed stay paired (docs/protocol.md §2).
"""
from __future__ import annotations

import zlib

import numpy as np

STREAMS = ("flow_init", "attention_init", "random_backbone", "data_order", "train_rotations", "feature_cache")


def stream_seed(seed: int, purpose: str) -> int:
    """The seed (an int in [0, 2**63)) of the generator that `purpose` (one of STREAMS) uses in a run seeded `seed`."""
    if purpose not in STREAMS:
        raise ValueError(f"unknown random stream {purpose!r}; known: {', '.join(STREAMS)}")
    sequence = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(purpose.encode()),))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def stream_seeds(seed: int) -> dict[str, int]:
    """Every stream's seed for a run seeded `seed`: {purpose: seed}, recorded in metrics.json."""
    return {purpose: stream_seed(seed, purpose) for purpose in STREAMS}


__all__ = ["STREAMS", "stream_seed", "stream_seeds"]
