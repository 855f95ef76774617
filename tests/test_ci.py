"""The repository's own checks for contributors: the GitHub workflow and .ci/run use the Makefile's targets (one
recipe, no second copy of the set-up that could drift)."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _jobs(text: str) -> dict[str, str]:
    """The workflow's jobs, each as its block of text (the YAML is read as text: no YAML parser is a dependency)."""
    body = text.split("\njobs:\n", 1)[1]
    names = re.findall(r"^  ([\w-]+):\n", body, re.M)
    blocks = re.split(r"^  [\w-]+:\n", body, flags=re.M)[1:]
    return dict(zip(names, blocks))


def test_the_workflow_runs_lint_and_quick_tests_on_push_and_the_suite_nightly():
    # catches: a job dropped or moved to the wrong trigger, a command that is not the Makefile's
    text = (REPO / ".github" / "workflows" / "tests.yml").read_text()
    triggers = text.split("\non:\n", 1)[1].split("\n\n", 1)[0]
    for trigger in ("push:", "pull_request:", "schedule:", "workflow_dispatch:"):
        assert trigger in triggers
    jobs = _jobs(text)
    assert "github.event_name == 'push' || github.event_name == 'pull_request'" in jobs["quick"]
    assert re.findall(r"- run: (.+)", jobs["quick"]) == ["make lint", "make test-fast"]
    assert "github.event_name == 'schedule'" in jobs["full"]
    assert re.findall(r"- run: (.+)", jobs["full"]) == ["make test"]


def test_ci_script_and_make_test_share_one_browser_set_up():
    # catches: .ci/run installing its own browser again, or `make test` running pytest before tools/browser.py
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get" not in ci
    assert "make test" in ci
    recipe = (REPO / "Makefile").read_text().split("\ntest: setup\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert recipe[0].strip() == "$(PY) tools/browser.py"
    assert "pytest" in recipe[1]
