# ruff: noqa: E501 - the mutants are easier to read one per line
"""Does the fast suite catch the bugs that break the suite's guarantees? A mutation check, for maintainers.

Each mutant is one realistic bug written into the code (a string replaced in one file); the fast suite (`pytest -m
"not slow"`, what `make test-fast` and every push run) must fail on it. The file is restored after each run,
whatever happens. Prints one line per mutant and a table; exit status 1 when a mutant survives.

    python tools/mutation_check.py                 # every mutant (about 40 s each on 2 cores)
    python tools/mutation_check.py --only lock     # the mutants whose name contains "lock"
    python tools/mutation_check.py --list
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file, original text, mutated text): each original must occur exactly once in its file.
MUTANTS = [
    ("lock shared, two writers", "adnlib/run/lock.py", "fcntl.LOCK_EX | fcntl.LOCK_NB", "fcntl.LOCK_SH | fcntl.LOCK_NB"),
    ("lock file not truncated", "adnlib/run/lock.py", "    os.ftruncate(fd, 0)\n", ""),
    ("lock file follows a link", "adnlib/io.py",
     'os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)', "os.O_RDWR | os.O_CREAT | os.O_NONBLOCK"),
    ("lock file of any kind accepted", "adnlib/io.py", "    if not stat.S_ISREG(os.fstat(fd).st_mode):",
     "    if False:"),
    ("probe and temporary files follow links", "adnlib/io.py",
     "_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, \"O_NOFOLLOW\", 0)",
     "_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC"),
    ("seed streams per process", "adnlib/seeds.py", "spawn_key=(zlib.crc32(purpose.encode()),)",
     "spawn_key=(hash(purpose) % 2 ** 32,)"),
    ("adoption copies metrics.json first", "adnlib/run/grid.py", 'key=lambda name: name == "metrics.json"',
     'key=lambda name: name != "metrics.json"'),
    ("recorded best.pt missing accepted", "adnlib/run/checkpoint.py", "    if not path.is_file():\n        raise "
     "CheckpointError(f\"{path} is missing, but", "    if False:\n        raise CheckpointError(f\"{path} is missing, but"),
    ("bootstrap regions 4-connected", "adnlib/explain/localization_metrics.py",
     "label(m, structure=EIGHT_CONNECTED)[1] for m in masks", "label(m)[1] for m in masks"),
    ("PRO regions 4-connected", "adnlib/explain/localization_metrics.py",
     "        labels, n = label(mask, structure=EIGHT_CONNECTED)", "        labels, n = label(mask)"),
    ("verdict sentence from the raw p", "adnlib/teach/analysis.py", '        elif row["beyond_noise"]:',
     '        elif row["p"] < 1 - level:'),
    ("checkpoints loaded unverified", "adnlib/run/checkpoint.py",
     "                    verify: bool | str = True) -> dict[str, Any]:",
     "                    verify: bool | str = False) -> dict[str, Any]:"),
    ("a pointer's target unverified", "adnlib/run/checkpoint.py", "        verify_weights(target, required=True)\n", ""),
    ("a bare checkpoint loaded silently", "adnlib/run/checkpoint.py", "    if record is None:\n        if required:",
     "    if record is None:\n        if False:"),
    ("results written in place", "adnlib/io.py", "        os.replace(tmp, path)\n",
     "        import shutil as _s; _s.copyfile(tmp, path)\n"),
    ("evaluation keeps the old metrics beside new scores", "adnlib/run/evaluation.py",
     '    (out_dir / "metrics.json").unlink(missing_ok=True)\n', ""),
    ("evaluation into a training run's folder", "adnlib/run/evaluation.py", "    if _holds_training_run(out_dir):",
     "    if False:"),
    ("localization keeps the old results beside new overlays", "adnlib/explain/localize.py",
     "        (out_dir / RESULT_FILE).unlink(missing_ok=True)", "        pass"),
    ("executed notebook written in place", "adnlib/teach/notebooks.py",
     "                executed = nbformat.read(writing, as_version=4)", "                executed = None; raise ValueError"),
    ("category names may climb out", "adnlib/data/datasets.py", 'text in (".", "..") or "/" in text',
     'text in (".",)'),
    ("demo written into a user's dataset", "adnlib/data/demo.py", "    _check_demo_folder(root)\n", ""),
    ("manifest names local files", "adnlib/run/fetch.py",
     '    if urlparse(url).scheme or Path(url).is_absolute() or url.startswith("~"):', "    if False:"),
    ("tiny images scored", "adnlib/data/datasets.py", "    if min(img.size) < MIN_IMAGE_PX:", "    if False:"),
    ("memory never checked", "adnlib/run/memory.py", "    if have is not None and need > have:", "    if False:"),
    ("SIGTERM kills without a word", "adnlib/cli/__init__.py", "    previous = signal.signal(signal.SIGTERM, stop)",
     "    previous = signal.getsignal(signal.SIGTERM)"),
    ("reuse blind to the backbone", "adnlib/run/identity.py", "if not a or not b or a.get(key) != b.get(key) else {}",
     "if False else {}"),
    ("data fingerprint of names only", "adnlib/data/datasets.py", "|{file_sha256(sample.path)}", ""),
    ("reuse blind to what a run used", "adnlib/run/cell.py",
     "        diff.update(used_differences(run_identity(record), expected))\n", ""),
    ("epochs taken as a run-time field", "adnlib/config.py", '    epochs: int = 192  #', '    epochs: int = runtime(192)  #'),
    ("a resume lowers the epochs", "adnlib/run/train.py", "saved_epoch > epochs:", "saved_epoch > epochs + 10 ** 6:"),
    ("comparison tables pooled across backbones", "adnlib/run/stats.py",
     '    _check_comparable(scores, "paired comparison")\n', ""),
    ("seed summary pooled across backbones", "adnlib/run/stats.py", '    _check_comparable(runs, "seed summary")\n', ""),
    ("ORH without Hillis's max", "adnlib/run/stats.py", '    gap = _dust(covariances["cov2"] - covariances["cov3"])',
     '    gap = covariances["cov2"] - covariances["cov3"]'),
    ("Holm as Bonferroni", "adnlib/run/stats.py", "p[order] * (m - np.arange(m))", "p[order] * m"),
    ("runs paired on the full image path", "adnlib/run/stats.py", '    frame = frame.assign(path=image_key(frame["path"], category))\n', ""),
    ("image key is the last two parts", "adnlib/run/stats.py", '                return "/".join(parts[i + 1:])', '                return "/".join(parts[-2:])'),
    ("shuffled control compares a map with its own mask", "adnlib/explain/evidence.py",
     "        order[index] = np.roll(index, -1)\n", ""),
    ("maps compared unnormalised", "adnlib/explain/localization_metrics.py",
     "    return normalise_maps(np.concatenate(parts))", "    return np.concatenate(parts).astype(np.float32)"),
    ("write failures as tracebacks", "adnlib/io.py", "WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS,",
     "WRITE_ERRNOS = {errno.EROFS,"),
    # the course: read, never completed; fetched as asked; sentences that claim only what was tested
    ("a course's missing run passes", "adnlib/teach/sources.py", "        if missing:\n            unpublished",
     "        if False:\n            unpublished"),
    ("names alone fetch the whole course", "adnlib/run/fetch.py", "take_grid = not names or grid_filtered",
     "take_grid = True"),
    ("run folders nested in a manifest", "adnlib/run/fetch.py", "        if inside is not None:\n",
     "        if False:\n"),
    ("a random-backbone course by accident", "adnlib/run/course.py", '    if base.weights == "auto" and resolve',
     "    if False and resolve"),
    ("cold start claimed at any p", "adnlib/teach/analysis.py", "    if not p < level:\n", "    if False:\n"),
    ("gate responses pooled over variants", "adnlib/teach/analysis.py",
     "    for variant, frame in differences.items():\n        outcome, observed",
     "    for variant, frame in {'all': pd.concat(differences.values())}.items():\n        outcome, observed"),
]


def run_fast_suite(timeout: float) -> tuple[bool, float]:
    """(failed?, seconds) of `pytest -m "not slow" -x` over 2 processes."""
    started = time.perf_counter()
    env = {**os.environ, "ADNLIB_OFFLINE": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-n", "2", "--dist",
                               "load", "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        failed = done.returncode != 0
    except subprocess.TimeoutExpired:
        failed = True  # a hang counts as caught (the per-test timeout would end it too)
    return failed, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/mutation_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the mutants whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per fast-suite run (default 900)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or args.only in m[0]]
    if args.list:
        for name, file, _, _ in chosen:
            print(f"{name}  ({file})")
        return 0
    for name, file, old, _ in chosen:  # every mutant applies, before any is run
        count = (ROOT / file).read_text().count(old)
        if count != 1:
            print(f"error: mutant {name!r}: its original text occurs {count} times in {file}", file=sys.stderr)
            return 2
    rows = []
    for name, file, old, new in chosen:
        path = ROOT / file
        original = path.read_text()
        try:
            path.write_text(original.replace(old, new, 1))
            caught, seconds = run_fast_suite(args.timeout)
        finally:
            path.write_text(original)
        rows.append((name, file, caught, seconds))
        print(f"{'killed ' if caught else 'SURVIVED'} {seconds:5.0f} s  {name} ({file})", flush=True)
    survived = [r for r in rows if not r[2]]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutants killed by the fast suite")
    print("\n| mutant | file | fast suite |\n|---|---|---|")
    for name, file, caught, _ in rows:
        print(f"| {name} | `{file}` | {'killed' if caught else '**survived**'} |")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
