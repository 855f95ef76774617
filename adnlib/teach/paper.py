"""The papers' reported image-level AUROC (%), as data, and a table that puts our results beside them.

Sources (docs/protocol.md §4): AttentDifferNet (Vieira e Silva et al., WACV 2024) — InsPLAD-fault per category for seven
methods, headline means on InsPLAD-fault, MVTec AD and Semiconductor Wafer; DifferNet (Rudolph et al., WACV 2021)
reports 94.9 on MVTec AD. In the InsPLAD-fault table "AttentDifferNet" is the SENet variant.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Our variant -> the paper's method name it reproduces (CBAM has no per-category numbers in the paper's table).
VARIANT_TO_METHOD = {"differnet": "DifferNet", "se": "AttentDifferNet"}

INSPLAD_FAULT_CATEGORIES = ("Glass Insulator", "Lightning Rod Susp.", "Polymer Insulator Upper Shackle",
                            "Vari-grip", "Yoke Susp.")

# method -> AUROC per category, in INSPLAD_FAULT_CATEGORIES order; then the paper's mean.
INSPLAD_FAULT = {
    "DifferNet": ((82.81, 99.08, 92.42, 91.20, 96.77), 92.46),
    "AttentDifferNet": ((86.57, 99.62, 94.62, 93.52, 97.38), 94.34),
    "RD++": ((86.21, 97.54, 83.67, 93.85, 92.46), 90.75),
    "CS-Flow": ((85.73, 96.60, 88.40, 91.53, 90.70), 90.59),
    "CFLOW-AD": ((82.22, 95.52, 86.60, 90.37, 83.87), 87.72),
    "PatchCore": ((78.44, 85.11, 81.02, 91.92, 58.06), 78.91),
    "FastFlow": ((70.16, 82.02, 77.43, 65.54, 71.48), 73.33),
}

# Headline means, AttentDifferNet paper (and DifferNet's own paper on MVTec AD).
HEADLINE_MEANS = {
    "insplad-fault": {"DifferNet": 92.46, "AttentDifferNet": 94.34},
    "mvtec-ad": {"DifferNet": 94.69, "AttentDifferNet": 96.67, "DifferNet (own paper)": 94.9},
    "semiconductor-wafer": {"DifferNet": 88.74, "AttentDifferNet": 90.20},
}
DATASET_TITLES = {"insplad-fault": "InsPLAD-fault", "mvtec-ad": "MVTec AD",
                  "semiconductor-wafer": "Semiconductor Wafer", "demo": "demo (generated)"}
# The abstract's own summary: "an average improvement ... of 1.77 +/- 0.25 percentage points in overall AUROC
# considering all three datasets". `average_gain` recomputes it from HEADLINE_MEANS: the mean agrees, the ± is
# neither the sample (0.28) nor the population (0.23) standard deviation of the three gains.
AVERAGE_GAIN = (1.77, 0.25)

# Spellings of dataset names a user may pass.
_DATASET_ALIASES = {"insplad": "insplad-fault", "inspladfault": "insplad-fault", "mvtec": "mvtec-ad",
                    "mvtecad": "mvtec-ad", "wafer": "semiconductor-wafer", "semiconductorwafer": "semiconductor-wafer",
                    "demo": "demo"}

# Normalised InsPLAD-fault folder names (the unsupervised split's folders) -> the paper's column names.
_INSPLAD_FOLDERS = {
    "glassinsulator": "Glass Insulator",
    "lightningrodsuspension": "Lightning Rod Susp.",
    "polymerinsulatorupperschackle": "Polymer Insulator Upper Shackle",  # a spelling seen in some copies
    "polymerinsulatoruppershackle": "Polymer Insulator Upper Shackle",
    "varigrip": "Vari-grip",
    "yokesuspension": "Yoke Susp.",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", name.lower())


def dataset_key(name: str) -> str:
    """'InsPLAD-fault', 'insplad', 'MVTec AD', 'wafer', 'demo'... -> a key of HEADLINE_MEANS, or 'demo'/'other'."""
    key = _key(name)
    if key in _DATASET_ALIASES:
        return _DATASET_ALIASES[key]
    return next((k for k in HEADLINE_MEANS if _key(k) == key), "other")


def paper_category(dataset: str, folder: str) -> str | None:
    """A category folder name -> the paper's category name (InsPLAD-fault), or None if the paper has no column.

    MVTec AD keeps its folder names (the AttentDifferNet paper gives only its mean here).
    """
    dataset = dataset_key(dataset)
    if dataset == "insplad-fault":
        key = _key(folder)
        if key in _INSPLAD_FOLDERS:
            return _INSPLAD_FOLDERS[key]
        return next((v for k, v in _INSPLAD_FOLDERS.items() if key.startswith(k) or k.startswith(key)), None)
    if dataset == "mvtec-ad":
        return folder
    return None


def paper_source(dataset: str, reference: str = "insplad-fault") -> str:
    """What the paper columns of `comparison_table(ours, dataset, reference=...)` hold, for legends and captions."""
    key = dataset_key(dataset)
    if key in HEADLINE_MEANS:
        return f"paper ({DATASET_TITLES[key]})"
    return f"paper ({DATASET_TITLES[dataset_key(reference)]} mean, reference only)"


def insplad_fault_table() -> pd.DataFrame:
    """The paper's InsPLAD-fault table: methods × (5 categories + 'mean'), AUROC in %."""
    rows = {m: list(per_cat) + [mean] for m, (per_cat, mean) in INSPLAD_FAULT.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(INSPLAD_FAULT_CATEGORIES) + ["mean"])


def headline_table() -> pd.DataFrame:
    """Datasets × methods of the papers' headline mean AUROC (%)."""
    frame = pd.DataFrame(HEADLINE_MEANS).T
    frame.index = [DATASET_TITLES[k] for k in frame.index]
    return frame[["DifferNet", "AttentDifferNet", "DifferNet (own paper)"]]


def paper_columns(dataset: str) -> list[str]:
    """The paper's method columns available for a dataset (all seven methods for InsPLAD-fault)."""
    dataset = dataset_key(dataset)
    if dataset == "insplad-fault":
        return list(INSPLAD_FAULT)
    return list(HEADLINE_MEANS.get(dataset, HEADLINE_MEANS["insplad-fault"]))


def comparison_table(ours: pd.DataFrame, dataset: str, *, reference: str = "insplad-fault",
                     backbone_weights: str = "imagenet", protocol: str = "paper") -> pd.DataFrame:
    """Our AUROC table beside the paper's numbers, with deltas and a note on comparability.

    ours: categories × variants in % with a 'mean' row (as `adnlib.run.grid.auroc_table`). Returns one row per
    category plus 'mean' with columns: category, paper_category, ours_<variant>..., paper_<method>...,
    delta_<variant> (ours − paper for differnet → DifferNet and se → AttentDifferNet), comparable, note.
    For a dataset the paper did not use (e.g. the demo), the paper columns stay empty and no deltas are computed:
    a row mixes no two datasets (the `reference` dataset's means are `headline_table`'s, shown apart).
    """
    key = dataset_key(dataset)
    known = key in HEADLINE_MEANS
    ref = key if known else dataset_key(reference)
    methods = paper_columns(ref)
    notes = []
    if not known:
        notes.append(f"{DATASET_TITLES.get(key, dataset)} is not a paper dataset: the paper has no numbers for "
                     "it (its means on its own datasets are shown apart)")
    if backbone_weights != "imagenet":
        notes.append(f"backbone weights '{backbone_weights}' (the paper uses ImageNet)")
    if protocol != "paper":
        notes.append(f"'{protocol}' protocol (the paper: 448 px, 192 epochs, 64 test rotations)")
    comparable = not notes
    insplad = insplad_fault_table() if ref == "insplad-fault" else None

    rows = []
    for category in ours.index:
        row = {"category": category}
        if category == "mean":
            row["paper_category"] = "mean"
            paper = ({} if not known else insplad["mean"].to_dict() if insplad is not None else HEADLINE_MEANS[ref])
        else:
            name = paper_category(key, category) if known else None
            row["paper_category"] = name
            paper = insplad[name].to_dict() if (insplad is not None and known and name in insplad.columns) else {}
        for variant in ours.columns:
            row[f"ours_{variant}"] = ours.loc[category, variant]
        for method in methods:
            row[f"paper_{method}"] = paper.get(method, np.nan)
        for variant, method in VARIANT_TO_METHOD.items():
            if variant in ours.columns:
                row[f"delta_{variant}"] = (row[f"ours_{variant}"] - row[f"paper_{method}"]) if known else np.nan
        row["comparable"] = comparable
        row["note"] = "; ".join(notes) if notes else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c.startswith(("ours_", "paper_", "delta_")) and c != "paper_category"]
    table[numeric] = table[numeric].astype(float).round(2)
    return table


def average_gain() -> dict[str, float]:
    """AttentDifferNet − DifferNet over the three datasets of HEADLINE_MEANS, in AUROC points: {"gains": per
    dataset, "mean", "sd_sample" (ddof 1), "sd_population" (ddof 0)}, beside the abstract's AVERAGE_GAIN."""
    gains = {DATASET_TITLES[k]: v["AttentDifferNet"] - v["DifferNet"] for k, v in HEADLINE_MEANS.items()}
    values = np.array(list(gains.values()))
    return {"gains": gains, "mean": float(values.mean()), "sd_sample": float(values.std(ddof=1)),
            "sd_population": float(values.std(ddof=0))}


def average_gain_text() -> str:
    """Where the paper's '+1.77 ± 0.25' comes from, and what its own tables give."""
    derived = average_gain()
    gains = ", ".join(f"{name} {gain:+.2f}" for name, gain in derived["gains"].items())
    return (f"The paper's abstract summarises the gain of AttentDifferNet over DifferNet as +{AVERAGE_GAIN[0]:.2f} ± "
            f"{AVERAGE_GAIN[1]:.2f} AUROC points over its three datasets. Its tables give {gains}: a mean of "
            f"{derived['mean']:+.2f}, with a standard deviation of {derived['sd_sample']:.2f} (sample) or "
            f"{derived['sd_population']:.2f} (population); the paper does not say how its ± was computed.")


__all__ = ["VARIANT_TO_METHOD", "INSPLAD_FAULT_CATEGORIES", "INSPLAD_FAULT", "HEADLINE_MEANS", "AVERAGE_GAIN",
           "DATASET_TITLES", "dataset_key", "paper_category", "paper_source", "insplad_fault_table", "headline_table",
           "paper_columns", "comparison_table", "average_gain", "average_gain_text"]
