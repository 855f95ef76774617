"""Regression checks (issue 16): a summary per headless notebook run, `adnlib drift` and `--baseline`.

Most tests build synthetic summaries (milliseconds); the two `slow` ones execute notebooks (a probe notebook, and
00_quickstart three times with the smoke parameters: about 2 minutes on 2 CPU cores).
"""
import copy
import json
from pathlib import Path

import nbformat
import pytest
from conftest import workflow_command
from nbformat.v4 import new_code_cell, new_notebook

from adnlib import cli, regression
from adnlib.regression import (
    SCHEMA,
    RegressionError,
    Tolerance,
    compare_summaries,
    load_summaries,
    parse_tolerance,
    summarize_run,
    tolerance_for,
    tolerance_rules,
    write_summary,
)

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "regression" / "baseline-smoke"
SMOKE = ["-p", "preset", '"smoke"', "-p", "weights", '"none"', "-p", "device", '"cpu"']


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _artefacts(folder: Path, auroc=0.75, loss=0.06, seconds=7.0) -> None:
    """A fake 00_quickstart output folder: quickstart.json and a training run; scored_images.csv is missing."""
    (folder / "run").mkdir(parents=True)
    (folder / "quickstart.json").write_text(json.dumps(
        {"auroc_last": auroc, "best_epoch": 1, "backbone_weights": "random", "device": "cpu",
         "train_seconds": seconds, "run_folder": str(folder / "run"), "curve": list(range(20))}))
    (folder / "run" / "metrics.json").write_text(json.dumps(
        {"auroc": auroc, "auroc_per_defect": {"chip": 0.5, "crack": float("nan")}, "parameters": {"flow": 1000},
         "config": {"epochs": 1, "lr": 2e-4}, "versions": {"torch": "9.9"}, "seeds": {"flow_init": 0}}))
    (folder / "run" / "history.csv").write_text(f"epoch,loss,seconds,auroc\n1,{loss},{seconds},{auroc}\n")


def _summary(tmp_path, name="00_quickstart", **changes):
    """A summary from fake artefacts, with `changes` (auroc, loss, seconds, epochs, wall) applied."""
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    _artefacts(out / name, **{k: changes[k] for k in ("auroc", "loss", "seconds") if k in changes})
    params = {"preset": "smoke", "weights": "none", "device": "cpu", "epochs": changes.get("epochs"),
              "output_dir": str(out / name)}
    return summarize_run(name, out, seconds=changes.get("wall", 30.0), parameters=params)


def _folder(tmp_path, label, *summaries) -> Path:
    folder = tmp_path / label
    folder.mkdir()
    for summary in summaries:
        write_summary(summary, folder)
    return folder


def _compare(capsys, run, baseline, *options) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main(["drift", str(run), str(baseline), *options])
    return status, capsys.readouterr().out


# --- the summary -----------------------------------------------------------------------------------------------
def test_summary_holds_key_numbers_settings_timings_and_what_is_missing(tmp_path):
    # catches: artefacts not read (or the run folder skipped), timings mixed into metrics, settings lost, a missing
    # artefact not listed, long lists or NaN breaking the JSON
    s = _summary(tmp_path)
    assert s["schema"] == SCHEMA
    assert s["kind"] == regression.KIND
    assert s["status"] == "ok"
    m = s["metrics"]
    assert m["quickstart.json:auroc_last"] == 0.75
    assert m["run/metrics.json:auroc_per_defect.chip"] == 0.5
    assert m["run/metrics.json:auroc_per_defect.crack"] == "nan"
    assert m["run/history.csv:epoch=1:loss"] == 0.06
    assert "run/metrics.json:config.epochs" not in m
    assert not [k for k in m if "curve" in k or "seconds" in k]
    assert s["timings_s"] == {"wall": 30.0, "quickstart.json:train_seconds": 7.0,
                              "run/history.csv:epoch=1:seconds": 7.0}
    settings = s["settings"]
    assert settings["device"] == "cpu"
    assert settings["backbone_weights"] == "random"
    assert settings["seeds"] == []
    assert settings["versions"]["torch"] == "9.9"
    assert "numpy" in settings["versions"]
    assert settings["run_configs"]["run/metrics.json"]["lr"] == 2e-4
    assert "output_dir" not in settings["parameters"]
    assert s["units"]["quickstart.json:auroc_last"] == "fraction in [0, 1]"
    assert s["artefacts"]["missing"] == ["scored_images.csv", "environment.json"]
    json.loads(json.dumps(s, allow_nan=False))


def test_summary_of_a_notebook_that_wrote_nothing(tmp_path):
    # catches: a crash (or an empty summary without the list of what is missing) when the output folder is absent
    s = summarize_run("04_auroc_evaluation", tmp_path, seconds=3.0, error="cell 5 failed")
    assert s["status"] == "failed"
    assert s["error"] == "cell 5 failed"
    assert s["metrics"] == {}
    assert "roc.json" in s["artefacts"]["missing"]
    assert s["timings_s"] == {"wall": 3.0}


def test_notebook_defaults_are_part_of_the_parameters(tmp_path):
    # catches: only the injected parameters recorded, so a changed default in the notebook would go unexplained
    s = summarize_run("00_quickstart", tmp_path, seconds=1.0, parameters={"epochs": 3},
                      source=REPO / "notebooks" / "00_quickstart.ipynb")
    assert s["settings"]["parameters"]["epochs"] == 3
    assert s["settings"]["parameters"]["category"] == "disc"
    assert s["settings"]["seeds"] == [0]
    assert len(s["settings"]["notebook_code_sha256"]) == 16


# --- comparing ---------------------------------------------------------------------------------------------------
def test_same_summaries_no_drift(tmp_path, capsys):
    # catches: a false drift (e.g. the creation time or the run folder compared) or a non-zero status
    s = _summary(tmp_path)
    status, out = _compare(capsys, _folder(tmp_path, "a", s), _folder(tmp_path, "b", copy.deepcopy(s)))
    assert status == 0, out
    assert "settings: identical" in out
    assert f"metrics: all {len(s['metrics'])} identical" in out
    assert out.strip().endswith("OK: no metric moved past its tolerance")


def test_changed_parameter_is_found_named_and_listed_first(tmp_path, capsys):
    # catches: drift not detected, status 0 on drift, the setting not named, or settings listed after the metrics
    base, run = _summary(tmp_path), _summary(tmp_path, epochs=2, auroc=0.85, loss=0.05)
    status, out = _compare(capsys, _folder(tmp_path, "run", run), _folder(tmp_path, "base", base))
    assert status == 1, out
    assert out.index("settings that differ") < out.index("parameters.epochs") < out.index("metrics (")
    row = next(ln for ln in out.splitlines() if "quickstart.json:auroc_last" in ln).split()
    assert row[2:] == ["0.75", "0.85", "+0.1", "(+13.3%)", "abs", "0.02", "DRIFT"], row
    loss = next(ln for ln in out.splitlines() if "history.csv:epoch=1:loss" in ln)
    assert "rel 5%" in loss
    assert loss.rstrip().endswith("DRIFT")
    assert "FAIL: 4 metric(s)" in out


def test_a_tolerance_that_absorbs_the_drift(tmp_path, capsys):
    # catches: --tolerance / --tolerances ignored, patterns not globbed, or the last rule not winning
    base, run = _summary(tmp_path), _summary(tmp_path, epochs=2, auroc=0.85, loss=0.05)
    a, b = _folder(tmp_path, "run", run), _folder(tmp_path, "base", base)
    assert _compare(capsys, a, b, "--tolerance", "*auroc*=0.01", "--tolerance", "*auroc*=0.2",
                    "--tolerance", "*loss=25%")[0] == 0
    (tmp_path / "tol.json").write_text(json.dumps({"*auroc*": "abs:0.2", "*:loss": "rel:0.25"}))
    status, out = _compare(capsys, a, b, "--tolerances", str(tmp_path / "tol.json"))
    assert status == 0, out
    assert "parameters.epochs" in out, out


def test_exact_fails_on_a_tiny_difference_that_tolerances_absorb(tmp_path, capsys):
    # catches: --exact using the tolerances, or exact failing on timings
    base, run = _summary(tmp_path), _summary(tmp_path, auroc=0.75 + 1e-9, seconds=9.0, wall=99.0)
    a, b = _folder(tmp_path, "run", run), _folder(tmp_path, "base", base)
    assert _compare(capsys, a, b)[0] == 0
    status, out = _compare(capsys, a, b, "--exact")
    assert status == 1, out
    assert "exact" in out, out
    assert "seconds" not in out.split("timings in seconds")[0], out


def test_timings_are_reported_never_failed(tmp_path, capsys):
    # catches: a slower run failing, or the wall time not shown
    base, run = _summary(tmp_path), _summary(tmp_path, seconds=70.0, wall=300.0)
    status, out = _compare(capsys, _folder(tmp_path, "run", run), _folder(tmp_path, "base", base), "--exact")
    assert status == 0, out
    wall = next(ln for ln in out.splitlines() if "wall (notebook)" in ln).split()
    assert wall[3:] == ["30", "300", "+270", "(+900.0%)"], wall
    assert "history.csv:epoch=1:seconds" in _compare(capsys, _folder(tmp_path, "r2", run),
                                                     _folder(tmp_path, "b2", base), "--all")[1]


def test_a_metric_that_disappears_fails_a_new_one_does_not(tmp_path):
    # catches: a lost artefact passing silently, or every added artefact failing old baselines
    base = _summary(tmp_path)
    run = copy.deepcopy(base)
    del run["metrics"]["quickstart.json:auroc_last"]
    assert compare_summaries({"n": run}, {"n": base}).status == 1
    assert compare_summaries({"n": base}, {"n": run}).status == 0


@pytest.mark.parametrize("case", ["older", "unknown", "unreadable", "missing notebook", "empty folder"])
def test_bad_summaries_are_one_error_line_and_status_2(tmp_path, capsys, case):
    # catches: a traceback, status 0/1, or an old baseline compared as if it were current
    good = _summary(tmp_path)
    bad = copy.deepcopy(good)
    bad["schema"] = {"older": SCHEMA - 1, "unknown": SCHEMA + 1}.get(case, SCHEMA)
    base = _folder(tmp_path, "base", good)
    run = _folder(tmp_path, "run", bad if case in ("older", "unknown") else good)
    if case == "unreadable":
        (run / "00_quickstart.summary.json").write_text("{not json")
    if case == "missing notebook":
        write_summary({**good, "notebook": "04_auroc_evaluation"}, base)
    if case == "empty folder":
        (run / "00_quickstart.summary.json").unlink()
    capsys.readouterr()
    assert cli.main(["drift", str(run), str(base)]) == 2
    line = one_error_line(capsys)
    expected = {"older": "an older summary schema", "unknown": "an unknown summary schema",
                "unreadable": "unreadable summary", "missing notebook": "no summary of 04_auroc_evaluation in the run",
                "empty folder": "no *.summary.json files"}[case]
    assert expected in line, line


def test_notebooks_checks_the_baseline_before_running(tmp_path, capsys):
    # catches: a baseline problem found only after minutes of notebook runs (nothing may run here)
    base = _folder(tmp_path, "base", _summary(tmp_path))
    out = tmp_path / "never"
    assert cli.main(["notebooks", "--out", str(out), "--only", "04_auroc_evaluation", "--baseline", str(base)]) == 2
    assert "has no summary of 04_auroc_evaluation" in one_error_line(capsys)
    assert not out.exists()
    assert cli.main(["notebooks", "--out", str(out), "--only", "00_quickstart", "--baseline", str(base),
                     "--tolerance", "*auroc*=lots"]) == 2
    assert "tolerance 'lots'" in one_error_line(capsys)
    assert not out.exists()


def test_tolerance_syntax_and_defaults():
    # catches: a misparsed tolerance, negative values accepted, or the wrong default for AUROC and losses
    assert parse_tolerance("0.02") == Tolerance(abs=0.02)
    assert parse_tolerance("5%") == Tolerance(rel=0.05)
    assert parse_tolerance("abs:0.01+rel:2%") == Tolerance(0.01, 0.02)
    assert parse_tolerance("exact") == Tolerance()
    for bad in ("-1", "x", "rel:", "abs=3", "size:1"):
        with pytest.raises(RegressionError):
            parse_tolerance(bad)
    assert tolerance_for("roc.json:variants.se.auroc") == Tolerance(abs=0.02)
    assert tolerance_for("run/history.csv:epoch=3:loss") == Tolerance(rel=0.05)
    assert tolerance_for("run/metrics.json:parameters.flow") == Tolerance()
    assert Tolerance(abs=0.02).allows(0.71, 0.73)
    assert not Tolerance(abs=0.02).allows(0.71, 0.7301)
    rules = tolerance_rules(["*auroc*=1", "roc.json:*=0.5"])
    assert tolerance_for("roc.json:variants.se.auroc", rules) == Tolerance(abs=0.5)


@pytest.mark.parametrize("baseline,run,allowed", [
    (1.0, 1.105, True),  # within abs + rel·|baseline| = 0.01 + 0.1 = 0.11, beyond max(abs, rel·|b|) = 0.1
    (1.0, 0.895, True),  # the same below the baseline
    (1.0, 1.11, True),  # exactly at the limit (the rounding slack keeps it in)
    (1.0, 1.1101, False),  # just beyond it
    (-2.0, -2.205, True),  # rel scales with |baseline| (0.01 + 0.2): a negative baseline does not shrink the limit
    (-2.0, -2.2101, False),
    (0.0, 0.01, True),  # a zero baseline: the absolute part alone
    (0.0, 0.0101, False),
])
def test_a_tolerance_adds_its_absolute_and_relative_parts(baseline, run, allowed):
    # catches: abs + rel read as max(abs, rel) or as one of them, rel applied to a signed baseline, no slack at the
    # limit (1.11 - 1.0 is 0.1100000000000001 in floating point), or a slack so wide that 1.1101 passes
    assert Tolerance(abs=0.01, rel=0.1).allows(baseline, run) is allowed


def test_an_exact_tolerance_allows_only_equal_values():
    assert Tolerance().allows(0.5, 0.5)
    assert not Tolerance().allows(0.5, 0.5 + 1e-15)


# --- the committed baseline and the workflow --------------------------------------------------------------------
def test_committed_smoke_baseline_is_current():
    # catches: a schema bump without re-making regression/baseline-smoke (CI would then stop with status 2)
    summaries = load_summaries(BASELINE)
    assert {"00_quickstart", "04_auroc_evaluation"} <= set(summaries)
    for s in summaries.values():
        params = s["settings"]["parameters"]
        assert s["status"] == "ok"
        assert (params["preset"], params["weights"], params["device"]) == ("smoke", "none",
                                                                                                   "cpu")
        assert s["metrics"]
        assert not s["artefacts"]["missing"]
    assert sorted(p.suffix for p in BASELINE.iterdir()) == [".json"] * len(summaries)


def test_workflow_compares_with_the_baseline_using_tolerances():
    # catches: a workflow that drifts from the documented recipe (other parameters, --exact on another torch)
    lines = (REPO / ".github" / "workflows" / "regression.yml").read_text().splitlines()
    text = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))  # the steps, not the comments
    assert "--baseline regression/baseline-smoke" in text
    assert "--exact" not in text
    assert all(p in text for p in ("""preset '"smoke"'""", """weights '"none"'""", """device '"cpu"'"""))
    assert "--only 00_quickstart 04_auroc_evaluation" in text


def test_workflow_command_is_read_whole():
    # catches: a parser that stops at the first line break and drops the parameters or the baseline
    command = workflow_command()
    assert command[:2] == ["adnlib", "notebooks"]
    assert command[command.index("--baseline") + 1] == "regression/baseline-smoke"
    assert command.count("-p") == 3


def test_make_regression_baseline_runs_the_workflows_notebooks_and_parameters():
    # catches: a baseline re-made with other notebooks or parameters than the workflow compares with
    import re
    import shlex
    make = (REPO / "Makefile").read_text()
    options = shlex.split(re.search(r"^REGRESSION := (.*)$", make, flags=re.MULTILINE).group(1))
    command = workflow_command()
    assert command[command.index("--only"):command.index("--baseline")] == options
    assert "--out runs/baseline-smoke $(REGRESSION)" in make
    assert "cp runs/baseline-smoke/*.summary.json regression/baseline-smoke/" in make


@pytest.mark.slow(seconds=45)  # notebooks 00 and 04 with the smoke parameters (the session's shared run)
def test_main_reproduces_the_committed_smoke_baseline(workflow_run):
    # catches: a change to notebook 00 or 04 (or to the library under them) that moves a metric while the committed
    # baseline stays as it was, so that the regression workflow fails on every push after it
    run, done = workflow_run  # conftest: the workflow's own command, run once for every test that reads it
    if done.returncode == 0:
        return
    remake = "if the change is meant, re-make the baseline in the same commit: make regression-baseline"
    if done.returncode != 1 or not list(run.glob("*.summary.json")):
        pytest.fail(f"the regression workflow's command ended with status {done.returncode}: "
                    f"{(done.stderr.strip().splitlines() or ['(no output)'])[-1]}", pytrace=False)
    result = compare_summaries(load_summaries(run), load_summaries(BASELINE))
    moved = [f"{row[1]} {row[2]} -> {row[3]}" for row in result.failed]
    failed = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # a notebook that failed
    pytest.fail(f"{len(moved)} metric(s) of the committed smoke baseline moved past their tolerance "
                f"({'; '.join(moved[:4])}{'; ...' if len(moved) > 4 else ''}){'; ' + failed[-1] if failed else ''}; "
                f"{remake}", pytrace=False)


# --- notebooks executed -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_notebook_writes_the_summary_even_when_a_cell_fails(tmp_path):
    # catches: no summary for a failed run, or the summary missing from the executed notebook's metadata
    from adnlib.teach.notebooks import NotebookError, run_notebook
    source = tmp_path / "probe.ipynb"
    nb = new_notebook(cells=[new_code_cell("output_dir = None", metadata={"tags": ["parameters"]}), new_code_cell(
        "import json, pathlib\np = pathlib.Path(output_dir); p.mkdir(parents=True, exist_ok=True)\n"
        "(p / 'result.json').write_text(json.dumps({'auroc': 0.5, 'device': 'cpu'}))"), new_code_cell("1 / 0")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    with pytest.raises(NotebookError):
        run_notebook("probe", tmp_path / "out", {"seed": 4}, source=source)
    summary = json.loads((tmp_path / "out" / "probe.summary.json").read_text())
    assert summary["status"] == "failed"
    assert "ZeroDivisionError" in summary["error"]
    assert summary["metrics"] == {"result.json:auroc": 0.5}
    assert summary["settings"]["seeds"] == [4]
    assert summary["timings_s"]["wall"] > 0
    executed = nbformat.read(tmp_path / "out" / "probe.ipynb", as_version=4)
    assert executed.metadata["adnlib"]["summary"] == summary


@pytest.mark.slow(seconds=45)  # two more runs of notebook 00 (the first is the session's shared one)
def test_end_to_end_quickstart_twice_then_with_more_epochs(tmp_path, workflow_run, demo_root, capsys, monkeypatch):
    # catches: non-deterministic summaries on the CPU (same seed and settings), or a real drift not failing
    first, _ = workflow_run  # the workflow's run: the same parameters, the data from $ADNLIB_DATA
    monkeypatch.setenv("ADNLIB_DATA", str(demo_root))
    assert cli.main(["notebooks", "--out", str(tmp_path / "b"), "--only", "00_quickstart", *SMOKE]) == 0
    status, report = _compare(capsys, tmp_path / "b", first, "--exact", "--only", "00_quickstart")
    print(report)
    assert status == 0, report
    assert "settings: identical" in report, report
    assert "metrics: all" in report, report
    a, b = load_summaries(first), load_summaries(tmp_path / "b")
    assert a["00_quickstart"]["metrics"] == b["00_quickstart"]["metrics"]
    assert a["00_quickstart"]["metrics"]
    capsys.readouterr()
    assert cli.main(["notebooks", "--out", str(tmp_path / "c"), "--only", "00_quickstart", *SMOKE,
                     "-p", "epochs", "2", "--baseline", str(first)]) == 1
    report = capsys.readouterr().out
    print(report)
    assert report.index("parameters.epochs") < report.index("metrics ("), report
    assert "DRIFT" in report, report


def test_write_summary_is_atomic_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    # catches a summary written in place: a write that fails half-way (full disk, kill) left half a JSON file,
    # which the next `adnlib drift` read as a corrupt baseline
    from adnlib import regression
    summary = {"notebook": "00_quickstart", "metrics": {"a": 1.0}}
    path = regression.write_summary(summary, tmp_path)
    before = path.read_text()

    def half_then_fail(self, data, *args, **kwargs):
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(regression.Path, "write_text", half_then_fail)
    with pytest.raises(OSError):
        regression.write_summary({**summary, "metrics": {"a": 2.0}}, tmp_path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left beside it
