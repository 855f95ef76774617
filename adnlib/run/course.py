"""The teacher's command: train the course's models once and publish them, so that students' notebooks load them
instead of training (`adnlib course`, docs/teaching.md "The course's models").

One call trains what notebooks 03-06 use, on the teacher's data and machine (ImageNet weights, the paper's
protocol, ideally a GPU):

* the grid: every variant x seed x category (`run_grid`; paired: one seed gives every variant the same flow
  initialisation, data order and angles), in <out>/<category>/<variant>/seed<k>/;
* notebook 03's cold-start study: SE with its gates starting open (`attention_init="open"`), paired with the grid's SE
  runs, in <out>/open-gates/<category>/se/seed<k>/;

and publishes them: <out>/release/ holds manifest.json (version 2: each run's checkpoint and its results, every
file with its sha256) and the files, to upload as they are (e.g. as a GitHub release's assets) or to serve from a
shared folder. A notebook's `checkpoints` parameter then takes the folder <out>, the manifest's path or its URL.
Finished runs are reused when the command runs again, so an interrupted course continues where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adnlib.config import VARIANTS, Config

OPEN_GATES = "open-gates"  # the folder (and manifest names) of the cold-start study's runs
RELEASE = "release"


def open_gates_name(category: str, seed: int) -> str:
    """The manifest name of the open-gates SE run of `category` and `seed` (its folder below a course folder)."""
    return f"{OPEN_GATES}/{category}/se/seed{seed}"


@dataclass
class Course:
    """What `train_course` made: the course folder, the manifest, and the runs it lists."""
    folder: Path
    manifest: Path
    categories: list[str]
    variants: list[str]
    seeds: list[int]
    open_gates: list[str] = field(default_factory=list)  # names of the open-gates runs
    backbone: str = ""  # the backbone weights the runs used ("imagenet", "random", a file), as recorded

    @property
    def n_runs(self) -> int:
        return len(self.categories) * len(self.variants) * len(self.seeds) + len(self.open_gates)

    def published_bytes(self) -> int:
        """Bytes of the release folder: what a full download would fetch."""
        return sum(p.stat().st_size for p in self.manifest.parent.iterdir() if p.is_file())


def train_course(base: Config, data_root: str | Path, out: str | Path, *, categories: list[str] | None = None,
                 variants: list[str] | None = None, seeds: list[int] | None = None, open_gates: bool = True,
                 base_url: str | None = None, progress: bool = True, lock_wait: float = 0) -> Course:
    """Train the course's runs into `out` (reusing finished ones) and write <out>/release/manifest.json.

    base: the protocol (e.g. `preset("paper", weights="imagenet")`); categories: default every category under
    data_root; variants: default all three; seeds: default 0, 1, 2 (three seeds: notebook 06's verdict needs them);
    open_gates: also train SE with open gates (notebook 03's cold start), when "se" is among the variants.
    base_url: where the release's files will be downloaded from (a GitHub release:
    https://github.com/<owner>/<repo>/releases/download/<tag>); None writes URLs relative to the manifest, so the
    folder also works as it is. Raises what `run_grid` raises (GridError when a run failed: nothing is published).
    """
    from adnlib.run.fetch import write_manifest
    from adnlib.run.grid import cell_dir, run_grid
    refuse_a_silent_random_backbone(base)
    out = Path(out)
    variants = list(dict.fromkeys(variants or VARIANTS))
    seeds = list(dict.fromkeys(seeds if seeds else [0, 1, 2]))
    runs = run_grid(base, data_root, categories, variants, out, seeds=seeds, progress=progress, lock_wait=lock_wait)
    categories = list(dict.fromkeys(runs["category"]))
    named = {}
    if open_gates and "se" in variants:
        run_grid(base.replace(attention_init="open"), data_root, categories, ["se"], out / OPEN_GATES, seeds=seeds,
                 progress=progress, lock_wait=lock_wait)
        named = {open_gates_name(c, s): cell_dir(out / OPEN_GATES, c, "se", s) for c in categories for s in seeds}
    cells = [cell_dir(out, c, v, s) for c in categories for v in variants for s in seeds]
    manifest = write_manifest(cells, base_url, out / RELEASE / "manifest.json", named=named)
    _remove_unlisted(manifest)
    backbone = ", ".join(sorted(set(runs["backbone_weights"].astype(str)))) if "backbone_weights" in runs else ""
    return Course(out, manifest, categories, variants, seeds, list(named), backbone)


def _remove_unlisted(manifest: Path) -> None:
    """Delete the release folder's files the manifest no longer lists (a run retrained since the last call leaves
    its old assets behind), so that what a teacher uploads is exactly what the manifest names. The folder is the
    command's own: a file put there by hand is deleted too (docs/teaching.md says so)."""
    import json
    from urllib.parse import unquote
    entries = json.loads(manifest.read_text())["checkpoints"]
    listed = {manifest.name} | {unquote(item["url"].rsplit("/", 1)[-1])
                                for entry in entries for item in [entry, *entry.get("files", {}).values()]}
    for path in manifest.parent.iterdir():
        if (path.is_file() or path.is_symlink()) and path.name not in listed:  # a link goes too (not its target)
            path.unlink()


def refuse_a_silent_random_backbone(base: Config) -> None:
    """ConfigError when weights 'auto' would fall back to random backbone weights here (no ImageNet weights cached
    or reachable): a course students set beside the paper's numbers must not be random by accident; 'none' asks for
    random weights on purpose."""
    from adnlib.errors import ConfigError
    from adnlib.model.weights import resolve_backbone
    if base.weights == "auto" and resolve_backbone("auto", base.seed)["source"] == "random":
        raise ConfigError("weights 'auto' would train the course on RANDOM backbone weights (no ImageNet weights on "
                          "this machine): pass --weights imagenet (online once) or a saved AlexNet file, or "
                          "--weights none to publish random-backbone runs on purpose")


def instructions(course: Course, base_url: str | None = None) -> str:
    """What to tell students: how notebooks 03-06 load the course's runs (several lines, for the terminal)."""
    manifest = course.manifest.resolve()
    size = course.published_bytes() / 1e9
    online = f"{base_url.rstrip('/')}/manifest.json" if base_url else "<where you uploaded release/>/manifest.json"
    extra = f", plus {len(course.open_gates)} SE runs with open gates" if course.open_gates else ""
    return "\n".join([
        f"course: {course.n_runs} runs in {course.folder} ({len(course.variants)} variants x {len(course.seeds)} "
        f"seeds x {len(course.categories)} categories{extra})",
        *([f"backbone weights: {course.backbone}" + (" (RANDOM: not the paper's setting)"
                                                     if "random" in course.backbone.split(", ") else "")]
          if course.backbone else []),
        f"published: {manifest.parent} (manifest.json and its files, {size:.2f} GB)",
        "notebooks 03-06 now load these runs instead of training; give them one of:",
        f'  on this machine or a shared drive:   checkpoints = "{manifest}"',
        f"  after uploading release/ (e.g. gh release create course-v1 {manifest.parent}/*):",
        f'                                       checkpoints = "{online}"',
        "  for every notebook at once: export ADNLIB_CHECKPOINTS=<the manifest's path or URL>, or write it into the "
        "Colab/Kaggle setup cells: python tools/hosted.py --checkpoints <URL>",
        "  headless: adnlib notebooks --out runs/course-book -p checkpoints '\"<path or URL>\"' "
        "-p data_root '\"<the same dataset>\"'",
        "students need the same dataset (data_root): every run records its data's fingerprint, and a notebook refuses "
        "runs trained on other images",
    ])
