"""What attention blocks do before any training (notebook 02): measured on real images, no trained model needed."""
from __future__ import annotations

import pandas as pd
import torch


@torch.no_grad()
def embedding_sizes(models: dict, images: torch.Tensor, reference: str | None = None) -> pd.DataFrame:
    """One row per model: the mean L2 norm of the embedding of `images` (B, 3, S, S), unrotated, and its ratio to
    the `reference` model's (default: the first). Every model must share the backbone's weights for the ratio to
    measure what its attention blocks do. Columns: model, embedding_norm, ratio, factor (1 / ratio: how many times
    smaller than the reference)."""
    rows = []
    for name, model in models.items():
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        y = model.embed(model.prepare(images.to(device)))
        model.train(was_training)
        rows.append({"model": name, "embedding_norm": float(y.norm(dim=1).mean())})
    table = pd.DataFrame(rows)
    base = table.set_index("model").loc[reference or table["model"].iloc[0], "embedding_norm"]
    table["ratio"] = table["embedding_norm"] / base
    table["factor"] = 1 / table["ratio"]
    return table


def mean_gates(records) -> list[float]:
    """The mean channel gate of each block (records: `attention_viz.collect_attention`'s list, one per block)."""
    return [float(record.channel_gates.mean()) for record in records]
