"""Regression checks for the headless notebook runs: one summary per executed notebook, and a comparison of two runs.

A summary (`out_dir/<name>.summary.json`, also in the executed notebook's `metadata["adnlib"]["summary"]`) holds
the key numbers the notebook wrote into its output folder (JSON and CSV artefacts, the training runs'
metrics.json and history.csv), the settings that explain a drift (parameters, versions, device, backbone weights,
seeds, the notebook's code) and the wall time. The notebooks themselves are not changed: everything is read from
what they write. `compare_summaries` checks two sets of summaries metric by metric with per-metric tolerances;
docs/regression.md is the recipe.
"""
from __future__ import annotations

import ast
import csv
import datetime as _dt
import fnmatch
import hashlib
import json
import math
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from adnlib.errors import AdnlibError

SCHEMA = 1  # bump when the layout below changes; a summary of another schema is refused (re-make the baseline)
KIND = "adnlib.notebook-summary"
SUMMARY_SUFFIX = ".summary.json"
# What each notebook writes (read from the notebooks' source); a missing one is listed in the summary.
# {variant} expands over the run's `variants` parameter.
EXPECTED = {
    "00_quickstart": ("quickstart.json", "scored_images.csv", "environment.json", "run/metrics.json"),
    "01_normalizing_flows_differnet": ("logdet_check.json", "latent_stats.json"),
    "02_attention_modules": ("attention_modules.json", "embedding_sizes.csv"),
    "03_training_attentdiffernet": ("metrics_{variant}.json", "last_vs_best.csv", "shrinkage.csv"),
    "04_auroc_evaluation": ("roc.json", "threshold.json", "auroc_per_defect.csv", "auroc_vs_rotations.csv"),
    "05_gradcam_comparison": ("gradcam.json",),
    "06_benchmark_report": ("runs.csv", "comparison.csv", "seed_summary.csv", "paired_comparison.csv"),
}
SKIP_FILES = {"scores.csv", "scores_best.csv"}  # one score per test image: the AUROCs summarise them
SETTINGS_FILES = {"environment.json"}  # read for the device, never as metrics
SETTING_KEYS = {"config", "versions", "seeds"}  # in a run's metrics.json: settings, not results
FACT_KEYS = ("device", "backbone_weights")
KEY_COLUMNS = {"epoch", "seed", "n_rotations", "rotations", "block", "scale", "index", "label"}
MAX_LIST = 8  # longer lists (ROC curves, angles, paths) are not key numbers
MAX_ROWS = 200  # longer CSV files (per-image tables) are skipped
MAX_DEPTH = 5  # sub-folders searched for training runs (metrics.json, history.csv)
VERSION_PACKAGES = ("torch", "torchvision", "numpy", "FrEIA", "papermill")
_TIMING = re.compile(r"(^|[_ .])(seconds?|secs|duration|time|wall)($|[_ .])|_s$", re.IGNORECASE)
UNITS = (("*auroc*", "fraction in [0, 1]"), ("*f1*", "fraction in [0, 1]"), ("*precision*", "fraction in [0, 1]"),
         ("*recall*", "fraction in [0, 1]"), ("*corr*", "correlation in [-1, 1]"), ("*loss*", "nats (NLL)"),
         ("*epoch*", "epochs"), ("parameters.*", "count"))


class RegressionError(AdnlibError, ValueError):
    """A summary is missing, unreadable or of another schema; or a tolerance is malformed."""


# --- one summary per notebook run ------------------------------------------------------------------------------
def summarize_run(name: str, out_dir: str | Path, *, seconds: float, parameters: dict | None = None,
                  source: str | Path | None = None, error: str | None = None) -> dict:
    """The summary of one executed notebook: key numbers read from out_dir/<name>/, settings and wall time.

    `parameters` are the injected ones (output_dir is dropped); the notebook's own defaults are read from the
    `parameters` cell of `source`. Missing artefacts are listed, never fatal.
    """
    folder = Path(out_dir) / name
    params = {**default_parameters(source), **(parameters or {})}
    params.pop("output_dir", None)
    found = collect_artefacts(folder)
    facts = found["facts"]
    seeds = params.get("seeds", [params["seed"]] if "seed" in params else [])
    settings = {
        "parameters": params,
        "device": ", ".join(sorted(facts.get("device", ()))) or params.get("device"),
        "backbone_weights": ", ".join(sorted(facts.get("backbone_weights", ()))) or params.get("weights"),
        "seeds": seeds,
        "versions": {**_versions(), **found["versions"]},
        "platform": platform.platform(),
        "notebook_code_sha256": _code_sha256(source),
        "run_configs": found["configs"],
    }
    return {
        "schema": SCHEMA, "kind": KIND, "notebook": name, "status": "failed" if error else "ok", "error": error,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "metrics": found["metrics"],
        "units": {m: u for m in found["metrics"] if (u := _unit(m))},
        "timings_s": {"wall": round(seconds, 3), **found["timings"]},
        "artefacts": {"read": found["read"], "missing": _missing(name, folder, params),
                      "skipped": found["skipped"], "unreadable": found["unreadable"]},
    }


def write_summary(summary: dict, out_dir: str | Path, notebook: str | Path | None = None) -> Path:
    """Write out_dir/<name>.summary.json and, when the executed notebook exists, put the same dict in its metadata
    (`metadata["adnlib"]["summary"]`). Returns the summary file. Both writes are atomic (a temporary file renamed
    over the target): a kill or a full disk leaves the previous file whole, never half a summary."""
    from adnlib.run.checkpoint import atomic_write
    path = Path(out_dir) / f"{summary['notebook']}{SUMMARY_SUFFIX}"
    text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    if notebook is not None and Path(notebook).is_file():
        import nbformat
        nb = nbformat.read(notebook, as_version=4)
        nb.metadata.setdefault("adnlib", {})["summary"] = summary
        atomic_write(notebook, lambda tmp: nbformat.write(nb, tmp))
    return path


def collect_artefacts(folder: Path) -> dict:
    """Numbers from the JSON and CSV files in `folder` (top level) and its training runs' metrics.json and
    history.csv (sub-folders); identical files are read once. Names read `<relative path>:<key>`."""
    found = {"metrics": {}, "timings": {}, "facts": {}, "versions": {}, "configs": {}, "read": [], "skipped": {},
             "unreadable": {}}
    if not folder.is_dir():
        return found
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".csv") and p.is_file())
    files += sorted(p for p in folder.rglob("*") if p.name in ("metrics.json", "history.csv") and p.parent != folder
                    and len(p.relative_to(folder).parts) <= MAX_DEPTH)
    seen = set()
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if path.name in SKIP_FILES:
            found["skipped"][rel] = "one row per test image"
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            values = _read_json(path, rel, found) if path.suffix == ".json" else _read_csv(path, rel, found)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            found["unreadable"][rel] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        if values is None:
            continue
        for name, value in values.items():
            found["timings" if _is_timing(name) else "metrics"][name] = value
        found["read"].append(rel)
    found["facts"] = {k: sorted(v) for k, v in found["facts"].items()}
    return found


def _read_json(path: Path, rel: str, found: dict) -> dict | None:
    data = json.loads(path.read_text())
    _harvest_facts(data, found["facts"])
    if path.name in SETTINGS_FILES:
        return None
    if isinstance(data, dict):
        if isinstance(data.get("versions"), dict):
            found["versions"].update({k: str(v) for k, v in data["versions"].items()})
        if isinstance(data.get("config"), dict):
            found["configs"][rel] = data["config"]
    values: dict = {}
    _flatten(data, "", values, skip=SETTING_KEYS if path.name.startswith("metrics") else ())
    return {f"{rel}:{k}": v for k, v in values.items()}


def _flatten(node, prefix: str, out: dict, skip=()) -> None:
    """Numeric leaves of nested dicts and short lists -> {"a.b[0]": value}; NaN and infinities as strings."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in skip:
                _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(node, list) and len(node) <= MAX_LIST:
        for i, value in enumerate(node):
            _flatten(value, f"{prefix}[{i}]", out)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix] = _number(node)


def _number(value: float | int) -> float | int | str:
    return value if math.isfinite(value) else str(value)


def _harvest_facts(node, facts: dict) -> None:
    """String values of the FACT_KEYS anywhere in a JSON document (the resolved device, the backbone weights)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in FACT_KEYS and isinstance(value, str):
                facts.setdefault(key, set()).add(value)
            elif key != "config":
                _harvest_facts(value, facts)
    elif isinstance(node, list):
        for value in node:
            _harvest_facts(value, facts)


def _read_csv(path: Path, rel: str, found: dict) -> dict | None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) > MAX_ROWS:
        found["skipped"][rel] = f"{len(rows)} rows (more than {MAX_ROWS})"
        return None
    columns = list(rows[0]) if rows else []
    numeric = {c: all(_parse(r[c]) is not None for r in rows if r[c] not in ("", None)) for c in columns}
    keys = [c for c in columns if not numeric[c] or c in KEY_COLUMNS or c == ""]
    values = {}
    for i, row in enumerate(rows):
        label = ",".join(f"{c or 'index'}={_short(row[c])}" for c in keys) or f"row{i}"
        for c in columns:
            if c not in keys and (number := _parse(row[c])) is not None:
                values[f"{rel}:{label}:{c}"] = number
    return values


def _parse(text: str | None) -> float | int | str | None:
    """A CSV cell as a number (NaN and infinities as strings), or None when it is not one."""
    if text is None or text == "" or text.lower() in ("true", "false"):
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return _number(float(text))
        except ValueError:
            return None


def _short(value: str | None) -> str:
    """A path-like key cell shortened to its last two parts (the run folder differs between machines)."""
    text = value or ""
    return "/".join(Path(text).parts[-2:]) if "/" in text or "\\" in text else text


def _is_timing(name: str) -> bool:
    return bool(_TIMING.search(name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]))


def _unit(name: str) -> str | None:
    lowered = name.rsplit(":", 1)[-1].lower()  # the value's own name, not its row or file
    return next((unit for pattern, unit in UNITS if fnmatch.fnmatchcase(lowered, pattern)), None)


def _missing(name: str, folder: Path, params: dict) -> list[str]:
    variants = params.get("variants")
    variants = variants if isinstance(variants, list) else [params.get("variant", "se")]
    expected = [e.format(variant=v) for e in EXPECTED.get(name, ()) for v in (variants if "{" in e else [None])]
    return [e for e in expected if not (folder / e).is_file()]


def default_parameters(source: str | Path | None) -> dict:
    """The defaults in a notebook's `parameters` cell (literal values; other expressions as their source text)."""
    if source is None or not Path(source).is_file():
        return {}
    import nbformat
    nb = nbformat.read(source, as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    params = {}
    for node in ast.parse(cell.source).body if cell is not None else []:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                params[node.targets[0].id] = ast.unparse(node.value)
    return params


def _code_sha256(source: str | Path | None) -> str | None:
    """A hash of the notebook's code cells (prose edits do not change it)."""
    if source is None or not Path(source).is_file():
        return None
    import nbformat
    nb = nbformat.read(source, as_version=4)
    code = "\n\x00".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _versions() -> dict:
    from adnlib.version import __version__
    found = {"python": platform.python_version(), "adnlib": __version__}
    for package in VERSION_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


# --- reading summaries -----------------------------------------------------------------------------------------
def load_summaries(path: str | Path) -> dict[str, dict]:
    """{notebook: summary} from a folder of *.summary.json files (or one such file). Raises RegressionError for a
    missing folder, no summaries, an unreadable file, another schema or a field of the wrong type (check_summary)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob(f"*{SUMMARY_SUFFIX}")) if path.is_dir() else None
    if files is None:
        raise RegressionError(f"{path}: no such folder")
    if not files:
        raise RegressionError(f"{path}: no *{SUMMARY_SUFFIX} files (run `adnlib notebooks --out {path}` first)")
    summaries = {}
    for file in files:
        try:
            summary = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegressionError(f"{file}: unreadable summary ({type(exc).__name__}: {exc})") from None
        if not isinstance(summary, dict) or summary.get("kind") != KIND:
            raise RegressionError(f"{file}: not an adnlib notebook summary (no \"kind\": \"{KIND}\")")
        schema = summary.get("schema")
        if schema != SCHEMA:
            age = "an older" if isinstance(schema, int) and schema < SCHEMA else "an unknown"
            raise RegressionError(f"{file}: {age} summary schema {schema!r}; this adnlib reads schema {SCHEMA} — "
                                  "re-make it with `adnlib notebooks`")
        check_summary(summary, file)
        summaries[summary["notebook"]] = summary
    return summaries


# The fields a comparison reads, each with its JSON type: (required, python types, what it must be).
_NUMBER_TEXTS = {"nan", "inf", "-inf"}  # non-finite numbers are written as these strings (_number)
SUMMARY_FIELDS = {
    "notebook": (True, (str,), "a string"),
    "metrics": (True, (dict,), "an object of numbers"),
    "status": (False, (str,), "a string"),
    "error": (False, (str, type(None)), "a string or null"),
    "created": (False, (str,), "a string"),
    "settings": (False, (dict,), "an object"),
    "units": (False, (dict,), "an object"),
    "timings_s": (False, (dict,), "an object of numbers"),
    "artefacts": (False, (dict,), "an object"),
}


def _json_type(value) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or value in _NUMBER_TEXTS


def check_summary(summary: dict, file: str | Path) -> None:
    """RegressionError naming `file` and the first field whose type is wrong (see SUMMARY_FIELDS): a summary that
    passes is one compare_summaries can read (a crash there would read as drift, exit 1)."""
    for name, (required, types, what) in SUMMARY_FIELDS.items():
        if name not in summary:
            if required:
                raise RegressionError(f"{file}: field \"{name}\" is missing (it must be {what})")
            continue
        value = summary[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise RegressionError(f"{file}: field \"{name}\" must be {what}, not {_json_type(value)}")
    for name in ("metrics", "timings_s"):
        bad = next((k for k, v in summary.get(name, {}).items() if not _is_number(v)), None)
        if bad is not None:
            raise RegressionError(f"{file}: field \"{name}\" entry {bad!r} must be a number, not "
                                  f"{_json_type(summary[name][bad])}")
    missing = summary.get("artefacts", {}).get("missing", [])
    if not isinstance(missing, list):
        raise RegressionError(f"{file}: field \"artefacts.missing\" must be an array, not {_json_type(missing)}")


# --- tolerances ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """|run - baseline| may be at most `abs + rel * |baseline|`."""
    abs: float = 0.0
    rel: float = 0.0

    def allows(self, baseline: float, run: float) -> bool:
        """Whether the difference is within this tolerance (exact: equal; else a rounding slack of 1e-12)."""
        if self.abs == 0 and self.rel == 0:
            return run == baseline
        limit = self.abs + self.rel * abs(baseline)
        return abs(run - baseline) <= limit + 1e-12 * max(limit, abs(baseline), abs(run))

    def __str__(self) -> str:
        if self.abs == 0 and self.rel == 0:
            return "exact"
        parts = ([f"abs {self.abs:g}"] if self.abs else []) + ([f"rel {100 * self.rel:g}%"] if self.rel else [])
        return " + ".join(parts)


# First match wins; patterns (case-insensitive globs) match the metric name `<artefact>:<key>`.
DEFAULT_TOLERANCES: tuple[tuple[str, Tolerance], ...] = (
    ("*auroc*", Tolerance(abs=0.02)),
    ("*:f1", Tolerance(abs=0.05)), ("*precision", Tolerance(abs=0.05)), ("*recall", Tolerance(abs=0.05)),
    ("*corr*", Tolerance(abs=0.05)),
    ("*p_value*", Tolerance(abs=0.05)), ("*delong*", Tolerance(abs=0.05)),
    ("*loss*", Tolerance(rel=0.05)),
    ("*parameters.*", Tolerance()),  # parameter counts: the model's shape, exact
    ("*", Tolerance(abs=1e-6, rel=0.05)),
)


def parse_tolerance(text: str) -> Tolerance:
    """`0.02` or `abs:0.02` (absolute), `5%` or `rel:0.05` (relative), `abs:0.01+rel:0.05`, `exact` or `0`."""
    tol = {"abs": 0.0, "rel": 0.0}
    if text.strip().lower() == "exact":
        return Tolerance()
    for part in text.replace(" ", "").split("+"):
        kind, sep, number = part.partition(":")
        if not sep:
            kind, number = ("rel" if part.endswith("%") else "abs"), part
        try:
            value = float(number[:-1]) / 100 if number.endswith("%") else float(number)
        except ValueError:
            value = -1.0
        if kind not in tol or not value >= 0:
            raise RegressionError(f"tolerance {text!r}: write 0.02 (absolute), 5% (relative), abs:0.02, "
                                  "rel:0.05, abs:0.01+rel:0.05 or exact")
        tol[kind] = value
    return Tolerance(**tol)


def tolerance_rules(pairs: list[str] = (), file: str | Path | None = None) -> tuple[tuple[str, Tolerance], ...]:
    """The tolerance rules: `--tolerance PATTERN=VALUE` (later ones first), then the file's {PATTERN: VALUE}
    entries, then DEFAULT_TOLERANCES."""
    rules = []
    for pair in reversed(list(pairs)):
        pattern, sep, value = pair.partition("=")
        if not sep or not pattern:
            raise RegressionError(f"--tolerance {pair!r}: write PATTERN=VALUE, e.g. '*auroc*=0.03' or '*loss*=10%'")
        rules.append((pattern, parse_tolerance(value)))
    if file is not None:
        try:
            entries = json.loads(Path(file).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegressionError(f"--tolerances {file}: unreadable ({type(exc).__name__}: {exc})") from None
        if not isinstance(entries, dict):
            raise RegressionError(f"--tolerances {file}: expected a JSON object {{\"PATTERN\": \"VALUE\"}}")
        rules += [(pattern, parse_tolerance(str(value))) for pattern, value in entries.items()]
    return (*rules, *DEFAULT_TOLERANCES)


def tolerance_for(metric: str, rules=DEFAULT_TOLERANCES) -> Tolerance:
    """The first rule whose pattern matches `metric` (case-insensitive)."""
    lowered = metric.lower()
    return next((tol for pattern, tol in rules if fnmatch.fnmatchcase(lowered, pattern.lower())), Tolerance())


# --- comparing two runs ----------------------------------------------------------------------------------------
@dataclass
class DriftReport:
    """The outcome of compare_summaries: rows of the three tables and the exit status (0 or 1)."""
    settings: list[tuple] = field(default_factory=list)  # (notebook, setting, baseline, run)
    metrics: list[tuple] = field(default_factory=list)  # (notebook, metric, baseline, run, diff, tolerance, status)
    timings: list[tuple] = field(default_factory=list)  # (notebook, timing, baseline, run, diff)
    compared: int = 0
    identical: int = 0

    @property
    def failed(self) -> list[tuple]:
        """The metric rows past their tolerance (or gone)."""
        return [row for row in self.metrics if row[-1] in ("DRIFT", "GONE")]

    @property
    def status(self) -> int:
        """1 when a metric moved past its tolerance or disappeared, else 0 (settings and timings never fail)."""
        return 1 if self.failed else 0


def compare_summaries(run: dict[str, dict], baseline: dict[str, dict], rules=DEFAULT_TOLERANCES, *,
                      exact: bool = False, only: list[str] | None = None) -> DriftReport:
    """Compare {notebook: summary} of a run with a baseline's. Every notebook of `only` (default: of both) must be
    in both, else RegressionError. `exact`: any difference of a non-timing metric fails."""
    names = list(only) if only else sorted(set(run) | set(baseline))
    for where, summaries in (("run", run), ("baseline", baseline)):
        absent = [n for n in names if n not in summaries]
        if absent:
            raise RegressionError(f"no summary of {', '.join(absent)} in the {where} (it has "
                                  f"{', '.join(sorted(summaries)) or 'none'})")
    result = DriftReport()
    for name in names:
        _compare_settings(name, run[name], baseline[name], result)
        _compare_metrics(name, run[name]["metrics"], baseline[name]["metrics"], rules, exact, result)
        _compare_timings(name, run[name].get("timings_s", {}), baseline[name].get("timings_s", {}), result)
    return result


def _compare_settings(name: str, run: dict, base: dict, result: DriftReport) -> None:
    flat_run, flat_base = {}, {}
    for summary, flat in ((run, flat_run), (base, flat_base)):
        _flatten_settings({"status": summary.get("status"), **summary.get("settings", {}),
                           "artefacts.missing": summary.get("artefacts", {}).get("missing", [])}, "", flat)
    for key in sorted(set(flat_run) | set(flat_base), key=_setting_order):
        if flat_run.get(key, "—") != flat_base.get(key, "—"):
            result.settings.append((name, key, flat_base.get(key, "—"), flat_run.get(key, "—")))


def _flatten_settings(node, prefix: str, out: dict) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten_settings(value, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = json.dumps(node, default=str)


def _setting_order(key: str) -> tuple:
    """Parameters first, then device, weights, seeds, versions, the rest."""
    order = ("status", "parameters", "device", "backbone_weights", "seeds", "versions", "notebook_code_sha256")
    head = key.split(".", 1)[0]
    return (order.index(head) if head in order else len(order), key)


def _compare_metrics(name: str, run: dict, base: dict, rules, exact: bool, result: DriftReport) -> None:
    for metric in sorted(set(run) | set(base)):
        result.compared += 1
        tol = Tolerance() if exact else tolerance_for(metric, rules)
        if metric not in run:
            result.metrics.append((name, metric, base[metric], None, None, tol, "GONE"))
            continue
        if metric not in base:
            result.metrics.append((name, metric, None, run[metric], None, tol, "new"))
            continue
        b, r = base[metric], run[metric]
        if b == r:
            result.identical += 1
            result.metrics.append((name, metric, b, r, 0 if isinstance(b, (int, float)) else None, tol, "same"))
            continue
        numbers = all(isinstance(v, (int, float)) for v in (b, r))
        diff = r - b if numbers else None
        ok = numbers and tol.allows(b, r)
        result.metrics.append((name, metric, b, r, diff, tol, "ok" if ok else "DRIFT"))


def _compare_timings(name: str, run: dict, base: dict, result: DriftReport) -> None:
    for timing in sorted(set(run) | set(base), key=lambda t: (t != "wall", t)):
        b, r = base.get(timing), run.get(timing)
        numbers = all(isinstance(v, (int, float)) for v in (b, r))
        result.timings.append((name, timing, b, r, r - b if numbers else None))


def drift(run: str | Path, baseline: str | Path, *, tolerances: list[str] = (), tolerances_file=None,
          exact: bool = False, only: list[str] | None = None) -> DriftReport:
    """What moved between the notebook summaries of a run and of a baseline (folders of `*.summary.json`, e.g. two
    `adnlib notebooks --out` folders) -> DriftReport (its `status`: 0 nothing past its tolerance, 1 a metric
    drifted or disappeared; `format_drift` prints it). tolerances: 'PATTERN=VALUE' rules (docs/regression.md),
    the last given winning; tolerances_file: a JSON object of them; exact: any difference fails; only: notebooks.

    >>> report = adnlib.regression.drift("runs/new", "regression/baseline-smoke")  # doctest: +SKIP
    >>> report.status, len(report.failed)  # doctest: +SKIP
    (0, 0)
    """
    rules = tolerance_rules(list(tolerances), tolerances_file)
    return compare_summaries(load_summaries(run), load_summaries(baseline), rules, exact=exact, only=only)


def format_drift(result: DriftReport, *, show_all: bool = False, max_rows: int = 40) -> str:
    """The report: settings that differ first (they explain most drifts), then the metrics that moved (all with
    `show_all`), then the wall times (every timing with `show_all`; never failed on), then a verdict line."""
    lines = []
    if result.settings:
        lines += ["settings that differ (listed first: they explain most drifts):",
                  *_table(("notebook", "setting", "baseline", "run"), result.settings, max_rows), ""]
    else:
        lines += ["settings: identical (parameters, versions, device, backbone weights, seeds, notebook code)", ""]
    severity = {"DRIFT": 0, "GONE": 1, "new": 2, "ok": 3, "same": 4}
    moved = sorted((r for r in result.metrics if show_all or r[-1] != "same"), key=lambda r: severity[r[-1]])
    if moved:
        rows = [(n, m, _fmt(b), _fmt(r), _fmt_diff(b, r, d), str(t), s) for n, m, b, r, d, t, s in moved]
        lines += [f"metrics ({result.compared} compared, {result.identical} identical):",
                  *_table(("notebook", "metric", "baseline", "run", "difference", "tolerance", "status"), rows,
                          max_rows), ""]
    else:
        lines += [f"metrics: all {result.compared} identical", ""]
    timings = [t for t in result.timings if show_all or t[1] == "wall"]
    rows = [(n, t if t != "wall" else "wall (notebook)", _fmt(b), _fmt(r), _fmt_diff(b, r, d)) for n, t, b, r, d in
            timings]
    lines += ["timings in seconds (reported, never failed on):",
              *_table(("notebook", "timing", "baseline", "run", "difference"), rows, max_rows), ""]
    failed = result.failed
    lines.append(f"FAIL: {len(failed)} metric(s) moved past their tolerance or are gone" if failed else
                 "OK: no metric moved past its tolerance")
    return "\n".join(lines)


def _table(header: tuple, rows: list[tuple], max_rows: int) -> list[str]:
    shown = rows if max_rows <= 0 else rows[:max_rows]
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in shown]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if len(shown) < len(rows):
        lines.append(f"  ... and {len(rows) - len(shown)} more rows (--max-rows 0 shows all)")
    return lines


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _fmt_diff(base, run, diff) -> str:
    if base is None or run is None:
        return "—"
    if diff is None:
        return "0" if base == run else "changed"
    text = f"{diff:+.4g}"
    return text + (f" ({100 * diff / abs(base):+.1f}%)" if base else "")
