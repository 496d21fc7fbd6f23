"""The README's two set-up commands stay true: CI runs exactly the test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```sh\n")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def test_readme_has_install_and_test_commands():
    run, test = _commands()[:2]
    assert run.endswith("pip install . && vtdtui")
    assert "pip install '.[test]'" in test and test.endswith("pytest -q -n auto")


def test_ci_runs_the_readme_test_command():
    test = _commands()[1]
    install_and_test = test.split("&& ", 2)[2]  # after creating and activating the venv
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci.splitlines()
