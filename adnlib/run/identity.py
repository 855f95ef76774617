"""What a run used, and whether two runs are the same run (reuse) or runs of one experiment (comparison).

Every run records three things beside its results (metrics.json, and the header of its checkpoints):

* `config`: the Config it ran with; its protocol (`Config.protocol()`: every field but the run-time ones such as
  the device) decides what it computed;
* `backbone`: the AlexNet features it resolved to (`adnlib.model.weights.backbone_record`: source, weights hash);
  `weights="auto"` is recorded as what it became, ImageNet or random;
* `data`: the images it read (`adnlib.data.datasets.data_record`: a fingerprint of each split's files and labels).

Reuse (a grid cell, an adopted run, a resume) and comparison (a seed summary, a paired comparison, a grid report)
read these records, never the request: `expected_identity` resolves a request the way a run would (so 'auto' means
what it would mean now), and `identity_differences` says what differs. A comparison's rows carry the records in
PROVENANCE_COLUMNS (`provenance_columns`), and `check_comparable` refuses a table that mixes runs that differ.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from adnlib.config import Config
from adnlib.errors import AdnlibError

NOT_RECORDED = "not recorded (an older adnlib)"
# Per-run columns a comparison table carries: what two of its runs must share to be compared.
PROVENANCE_COLUMNS = ("protocol", "backbone", "data")
# Fields that differ between the runs of one comparison by design (readers and modalities).
COMPARED_FIELDS = ("variant", "seed")


class RunMismatchError(AdnlibError, ValueError):
    """Runs that differ in what they used (protocol, backbone, data) were to be reused or compared as one."""


def run_identity(record: dict) -> dict:
    """{"protocol": dict | None, "backbone": dict | None, "data": dict | None} from a metrics.json or checkpoint dict
    (None where the run recorded nothing: an older adnlib). Fields a Config no longer has are kept as saved."""
    config = record.get("config")
    protocol = None
    if isinstance(config, dict):
        runtime = set(Config.runtime_fields())
        protocol = {k: v for k, v in config.items() if k not in runtime}
    backbone, data = record.get("backbone"), record.get("data")
    return {"protocol": protocol, "backbone": backbone if isinstance(backbone, dict) else None,
            "data": data if isinstance(data, dict) else None}


def expected_identity(config: Config, data_root: str | Path, category: str) -> dict:
    """The identity a run of `config` on `category` of `data_root` would record if it started now: its protocol,
    the backbone its weights resolve to (for its seed) and the fingerprint of the data found there."""
    from adnlib.data.datasets import data_record
    from adnlib.model.weights import resolve_backbone
    from adnlib.seeds import stream_seed
    return {"protocol": config.protocol(),
            "backbone": resolve_backbone(config.weights, stream_seed(config.seed, "random_backbone")),
            "data": data_record(data_root, category)}


def _backbone_text(backbone: dict | None) -> str:
    if not backbone:
        return NOT_RECORDED
    source = backbone.get("source")
    where = f"file {backbone.get('file')}" if source == "file" else str(source)
    return f"{where} (weights sha256 {str(backbone.get('sha256'))[:12]})"


def _split_text(split: dict | None) -> str:
    if not isinstance(split, dict):
        return NOT_RECORDED
    return f"{split.get('n')} images, sha256 {str(split.get('sha256'))[:12]}"


def data_differences(saved: dict | None, wanted: dict | None) -> dict[str, tuple[str, str]]:
    """{"data (<split> images)": (saved, wanted)} for each split whose fingerprint differs (or was not recorded)."""
    saved, wanted = saved or {}, wanted or {}
    return {f"data ({split} images)": (_split_text(saved.get(split)), _split_text(wanted.get(split)))
            for split in ("train", "test")
            if not isinstance(saved.get(split), dict) or saved.get(split) != wanted.get(split)}


def used_differences(saved: dict, wanted: dict, *, same_run: bool = True) -> dict[str, tuple[str, str]]:
    """{field: (saved, wanted)} where two identities differ in what they used: the backbone (its weights' sha256
    for the same run; its id across seeds, whose random features differ by design) and the data of each split."""
    key = "sha256" if same_run else "id"
    a, b = saved.get("backbone"), wanted.get("backbone")
    diff = {"backbone": (_backbone_text(a), _backbone_text(b))} if not a or not b or a.get(key) != b.get(key) else {}
    return {**diff, **data_differences(saved.get("data"), wanted.get("data"))}


def identity_differences(saved: dict, wanted: dict, *, same_run: bool = True) -> dict[str, tuple[Any, Any]]:
    """{field: (saved, wanted)} where two identities (run_identity / expected_identity) differ.

    same_run=True (reuse: the same variant and seed): every protocol field, the backbone's weights (sha256) and
    both data splits. same_run=False (one comparison: other variants and seeds of the same category): the protocol
    but variant and seed, the backbone's id and both data splits. A part that either side did not record differs.
    """
    a, b = saved.get("protocol"), wanted.get("protocol")
    if a is None or b is None:
        diff = {"config": (NOT_RECORDED if a is None else "recorded", NOT_RECORDED if b is None else "recorded")}
    else:
        skip = () if same_run else COMPARED_FIELDS
        diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)}
    return {**diff, **used_differences(saved, wanted, same_run=same_run)}


def describe(diff: dict[str, tuple[Any, Any]], first: str = "there", second: str = "requested") -> str:
    """'field: A there, B requested; ...' for a message."""
    return "; ".join(f"{k}: {a!r} {first}, {b!r} {second}" if not k.startswith(("backbone", "data"))
                     else f"{k}: {a} {first}, {b} {second}" for k, (a, b) in diff.items())


# --- comparison tables -------------------------------------------------------------------------------------------
def _short_hash(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance_columns(record: dict) -> dict[str, str]:
    """The PROVENANCE_COLUMNS values of one run (from its metrics.json dict), short enough for a table: a hash of
    its protocol without variant and seed, its backbone's id ("random" or "sha256:<16 hex>"), a hash of its data's
    fingerprints; NOT_RECORDED where it recorded none. Equal values: runs that may be compared."""
    identity = run_identity(record)
    protocol, backbone, data = identity["protocol"], identity["backbone"], identity["data"]
    return {
        "protocol": NOT_RECORDED if protocol is None else _short_hash(json.dumps(
            {k: v for k, v in protocol.items() if k not in COMPARED_FIELDS}, sort_keys=True, default=str)),
        "backbone": NOT_RECORDED if not backbone else str(backbone.get("id"))[:23],
        "data": NOT_RECORDED if not data else _short_hash("|".join(
            str((data.get(s) or {}).get("sha256")) for s in ("train", "test"))),
    }


def _run_name(row) -> str:
    return f"{row['category']}/{row['variant']}/seed{row['seed']}"


_COLUMN_FIELD = {"protocol": "config (protocol hash)", "backbone": "backbone", "data": "data (fingerprint)"}


def check_comparable(runs: pd.DataFrame, what: str = "comparison") -> None:
    """RunMismatchError (one line naming two runs and what differs) unless the runs of `runs` (one row per run, or
    per image of a run: columns category, variant, seed and any PROVENANCE_COLUMNS) may be compared: one protocol
    and one backbone in the whole table, one data set per category. Columns that are absent are not checked."""
    for column in (c for c in PROVENANCE_COLUMNS if c in runs.columns):
        groups = runs.groupby("category", sort=False) if column == "data" else [(None, runs)]
        for _, part in groups:
            values = part[column].astype(str)
            if values.nunique() > 1:
                first, other = part.iloc[0], part[values != values.iloc[0]].iloc[0]
                raise RunMismatchError(f"the {what} mixes runs that differ: {_run_name(first)} and "
                                       f"{_run_name(other)} differ in {_COLUMN_FIELD[column]}: {first[column]} vs "
                                       f"{other[column]}; compare runs of one protocol, backbone and data set only")


def check_records(records: dict[str, dict], what: str = "comparison") -> None:
    """As check_comparable, on the runs' metrics.json dicts ({'category/variant/seed<k>': record}), naming the
    config fields that differ: the first run of each category is compared with every other run of it (the whole
    identity but variant and seed), and the first run of the table with the first of every other category
    (protocol and backbone)."""
    firsts: dict[str, tuple[str, dict]] = {}
    for name, record in records.items():
        category = name.split("/", 1)[0]
        identity = run_identity(record)
        if category not in firsts:
            firsts[category] = (name, identity)
            reference_name, reference = next(iter(firsts.values()))
            diff = identity_differences(reference, identity, same_run=False)
            diff = {k: v for k, v in diff.items() if not k.startswith("data")}
        else:
            reference_name, reference = firsts[category]
            diff = identity_differences(reference, identity, same_run=False)
        if diff:
            raise RunMismatchError(f"the {what} mixes runs that differ: {reference_name} and {name} "
                                   f"({describe(diff, 'in the first', 'in the second')}); compare runs of one "
                                   "protocol, backbone and data set only")
