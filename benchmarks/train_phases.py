"""Where the time of one `adnlib train` run goes: imports, data, model build, training steps, parameter checks,
evaluation, checkpoint writes, other result files. Light wrappers around the library's functions time each phase
in-process (no profiler, so no profiler overhead); the figures are in benchmarks/README.md ("Whole run").

    ADNLIB_OFFLINE=1 python benchmarks/train_phases.py phases.json train --data data/demo --category disc \\
        --preset paper --epochs 1 --img-size 256 --weights none --device cpu --no-progress --out /tmp/run

argv: the JSON file to write, then the `adnlib` command line. Torch runs on --threads (environment THREADS, default
1: see README.md, "Threads"). For the import split by package: `python -X importtime -c "import adnlib.run.train"`.
"""
from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()
import torch  # noqa: E402

import adnlib.cli as cli  # noqa: E402
import adnlib.run.train as tr  # noqa: E402  (what `adnlib train` imports when it starts)

IMPORT_SECONDS = time.perf_counter() - T0
spent: dict[str, float] = {}


def wrap(owner, name: str, key: str) -> None:
    fn = getattr(owner, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started
    setattr(owner, name, timed)


def main(argv: list[str]) -> None:
    import adnlib.data.datasets as datasets
    import adnlib.model.network as model
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    wrap(datasets.AnomalyDataset, "check", "read_data")
    wrap(model.AttentDifferNet, "__init__", "model_build")
    wrap(tr, "score_dataset", "evaluation")
    wrap(tr, "save_checkpoint", "checkpoint_writes")
    wrap(tr, "save_pointer", "checkpoint_writes")
    wrap(tr, "write_csv", "csv_json_writes")
    wrap(tr, "write_json", "csv_json_writes")
    wrap(tr, "_all_finite", "parameter_checks")
    wrap(tr, "train", "train_call")
    cli.main(argv[1:])
    parts = ("read_data", "model_build", "evaluation", "checkpoint_writes", "csv_json_writes", "parameter_checks")
    spent["training_steps_and_rest"] = spent["train_call"] - sum(spent.get(k, 0.0) for k in parts)
    spent["imports"] = IMPORT_SECONDS
    spent["in_process_total"] = time.perf_counter() - T0
    with open(argv[0], "w") as f:
        json.dump(spent, f, indent=1)
    print(json.dumps({k: round(v, 2) for k, v in spent.items()}))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):  # usage: the JSON file, then an `adnlib train` line
        print(__doc__)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    main(sys.argv[1:])
