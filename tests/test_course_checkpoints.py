"""A notebook's `checkpoints` parameter: train here, notebook 02's runs, a folder, or a published manifest."""
import hashlib
import json

from adnlib.run.fetch import write_manifest
from adnlib.teach.analysis import resolve_checkpoints


def _grid(root, cells):
    for category, variant, seed in cells:
        cell = root / category / variant / f"seed{seed}"
        cell.mkdir(parents=True)
        (cell / "checkpoint.pt").write_bytes(f"{category}/{variant}/{seed}".encode())
        (cell / "metrics.json").write_text(json.dumps({"category": category, "variant": variant, "seed": seed}))


def test_every_form_of_the_checkpoints_parameter(tmp_path):
    # catches a resolver that ignores the seed, the "" (train here) choice, or a manifest's cells
    runs = tmp_path / "02" / "runs"
    _grid(runs, [("disc", "differnet", 0), ("disc", "se", 0), ("disc", "se", 1), ("weave", "se", 0)])
    assert resolve_checkpoints("", "disc", ["differnet", "se"], 0, default_runs=runs) == {}
    auto = resolve_checkpoints("auto", "disc", ["differnet", "se", "cbam"], 1, default_runs=runs)
    assert auto == {"se": (runs / "disc" / "se" / "seed1" / "checkpoint.pt", True)}  # seed 1 only; cbam: train here
    folder = resolve_checkpoints(str(runs), "disc", ["differnet", "se"], 0)
    assert set(folder) == {"differnet", "se"}
    manifest = write_manifest(runs, None, tmp_path / "published" / "manifest.json")
    fetched = resolve_checkpoints(str(manifest), "disc", ["differnet", "se", "cbam"], 0)
    assert set(fetched) == {"differnet", "se"}
    path, verify = fetched["se"]
    assert path.read_bytes() == b"disc/se/0"  # the right cell's file, sha256-checked on the way
    assert verify == hashlib.sha256(b"disc/se/0").hexdigest()  # and the loader checks it against that again
