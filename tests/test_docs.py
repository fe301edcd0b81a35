"""README.md and docs/ tell the truth about the project: every Python block is run by a test or marked as
not run, every command they name exists with the options they give it, and every relative link leads to
a file of this repository (and to a heading of it, where it names one).

The commands are checked against the project itself at test time: make targets against the Makefile,
``whisper-triton``, ``python -m training`` and our other modules against their own ``--help``, scripts
against their source. Running the blocks is the business of the tests that own what they show
(tests/test_api_document.py, tests/test_client.py), through tests/doc_snippets.py.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_snippets import REPO_ROOT, all_blocks, blocks, doc_files, doc_snippet, prose

TESTS = Path(__file__).resolve().parent
OUTSIDE_REFERENCES = ("LESSONS.md", "DESIGN.md", "STYLE.md", "../shared", "shared/")
# Programs of other projects that the pages show (containers, clusters, launchers): not ours to check.
OUR_MODULES = ("whisper_triton", "training")


def _executed_snippet_names() -> set[str]:
    """The names the tests run: doc_snippet(name), or a helper of theirs whose name ends in snippet."""
    names: set[str] = set()
    for test in TESTS.glob("test_*.py"):
        names |= set(re.findall(r"\w*snippet\(\s*\"([^\"]+)\"", test.read_text(encoding="utf-8")))
    return names


def test_every_python_block_is_run_or_marked():
    executed = _executed_snippet_names()
    problems = []
    for block in all_blocks():
        if block.name and block.not_executed:
            problems.append(f"{block.where}: both named and not-executed")
        if block.language != "python":
            continue
        if block.not_executed:
            continue
        if not block.name:
            problems.append(
                f"{block.where}: a Python block without <!-- snippet: NAME --> or <!-- not-executed: why -->"
            )
        elif block.name not in executed:
            problems.append(f"{block.where}: no test runs doc_snippet({block.name!r})")
    assert not problems, "\n".join(problems)


def test_named_snippets_exist_and_agree():
    for name in _executed_snippet_names():
        doc_snippet(name)  # asserts that it exists, and that copies of it are identical
    seen: dict[str, str] = {}
    for block in all_blocks():
        if block.name:
            assert seen.setdefault(block.name, block.code) == block.code, (
                f"{block.where}: {block.name!r} differs"
            )


def test_train_json_block_is_a_configuration_training_accepts(tmp_path):
    config = tmp_path / "train.json"
    config.write_text(doc_snippet("train-json").code, encoding="utf-8")
    json.loads(config.read_text())  # well-formed
    status, out = _training_cli(["train", "--config", str(config), "--print-config"])
    assert status == 0, out
    resolved = json.loads(out)
    assert resolved["training"]["learning_rate"] == 1e-5
    assert resolved["data"]["train_split"] == "train-clean-100"


# ---- commands ----


def _make_targets() -> set[str]:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.MULTILINE))


def _training_cli(argv: list[str]) -> tuple[int, str]:
    """``python -m training ARGV`` in this process: its exit status and output (importing torch and
    transformers takes seconds, once here instead of once per command)."""
    from training.cli import main

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = main(argv)
    except SystemExit as exit:  # --help
        status = exit.code
    return status or 0, out.getvalue()


@functools.cache
def _help(*command: str) -> str:
    """``--help`` of one of our commands, run as a user would (and so reading its own command table)."""
    if command[:2] == ("-m", "training"):
        status, out = _training_cli([*command[2:], "--help"])
        assert status == 0, f"python {' '.join(command)} --help failed:\n{out}"
        return out
    result = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, f"{' '.join(command)} --help failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def _flags(tokens: list[str]) -> list[str]:
    flags = [token.split("=", 1)[0] for token in tokens if token.startswith("--") and len(token) > 2]
    return [flag for flag in flags if flag != "--help"]


def _placeholder(token: str) -> bool:
    return token.isupper() or token.startswith("<")


def _check_options(help_text: str, tokens: list[str], where: str) -> list[str]:
    return [
        f"{where}: {flag} is not an option ({' '.join(tokens)})"
        for flag in _flags(tokens)
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text)
    ]


def _check_command(tokens: list[str], where: str) -> list[str]:
    """Problems with one command line (an empty list when it exists as written, or is not ours)."""
    if not tokens:
        return []
    program, *rest = tokens
    program = program.removeprefix(".venv/bin/")
    if program in ("torchrun", "accelerate") and "-m" in rest:  # launchers of `python -m training`
        program, rest = "python", rest[rest.index("-m") :]
    if program == "make":
        targets = [t for t in rest if "=" not in t and not t.startswith("-") and not _placeholder(t)]
        unknown = sorted(set(targets) - _make_targets())
        return [f"{where}: no make target {t!r}" for t in unknown]
    if program == "whisper-triton":
        program, rest = "python", ["-m", "whisper_triton", *rest]
    if program not in ("python", "python3"):
        return []  # docker, kubectl, pip, tensorboard, tritonserver, ...: other projects' programs
    if rest[:1] == ["-m"] and len(rest) > 1:
        module, args = rest[1], rest[2:]
        if module.split(".")[0] not in OUR_MODULES:
            return []
        command = ["-m", module]
        if module == "whisper_triton":
            if not args or args[0].startswith("-") or _placeholder(args[0]):
                return []  # `whisper-triton --help`, `whisper-triton COMMAND --help`
            command.append(args[0])
        elif module == "training":
            command.append(args[0] if args and args[0] in ("train", "evaluate") else "train")
        return _check_options(_help(*command), args, where)
    if rest and rest[0].endswith(".py"):
        script = REPO_ROOT / rest[0]
        if not script.is_file():
            return [f"{where}: no script {rest[0]}"]
        return _check_options(script.read_text(encoding="utf-8"), rest[1:], where)
    return []


def _command_lines(code: str) -> list[str]:
    """The commands of a shell block: comments dropped, continuations joined, `a && b; c` split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        # `make serve &` runs it in the background: the command is the same
        line = re.split(r"\s#\s|^#", line)[0].strip().rstrip("&").strip()
        commands += [part.strip() for part in re.split(r"&&|;|\|\|", line) if part.strip()]
    return commands


def _tokens(command: str) -> list[str]:
    command = command.replace("[", " ").replace("]", " ")  # `[--limit 200]`: optional, still an option
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


INLINE_COMMAND = re.compile(r"`((?:make|whisper-triton|python3?|\.venv/bin/\S+) [^`]*)`")


def test_every_command_exists_as_written():
    problems = []
    for block in all_blocks():
        if block.language in ("bash", "sh", "shell", "console"):
            for command in _command_lines(block.code):
                problems += _check_command(_tokens(command), block.where)
    for path in doc_files():
        for match in INLINE_COMMAND.finditer(prose(path)):
            problems += _check_command(
                _tokens(match.group(1)), f"{path.relative_to(REPO_ROOT)} `{match.group(1)}`"
            )
    assert not problems, "\n".join(problems)


def test_the_command_checks_catch_what_does_not_exist():
    assert _check_command(["make", "no-such-target"], "x")
    assert _check_command(["whisper-triton", "build", "--no-such-option"], "x")
    assert _check_command(["python", "scripts/no_such_script.py"], "x")
    assert not _check_command(["whisper-triton", "build", "--precision", "int8"], "x")
    with pytest.raises(AssertionError):
        _help("-m", "whisper_triton", "no-such-command")


# ---- links ----

LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    anchors: set[str] = set()
    for line in prose(path).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug, count = _slug(heading.group(1)), 1
            while slug in anchors:  # GitHub numbers repeated headings: name, name-1, name-2, ...
                slug = f"{_slug(heading.group(1))}-{count}"
                count += 1
            anchors.add(slug)
    return frozenset(anchors)


def test_every_relative_link_resolves_inside_the_repository():
    problems = []
    for path in doc_files():
        for target in LINK.findall(prose(path)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO_ROOT)}: ({target})"
            if not linked.is_relative_to(REPO_ROOT):
                problems.append(f"{where} leaves the repository")
            elif not linked.exists():
                problems.append(f"{where} does not exist")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                problems.append(f"{where}: no heading #{anchor} in {linked.relative_to(REPO_ROOT)}")
    assert not problems, "\n".join(problems)


def test_nothing_in_the_project_refers_outside_the_repository():
    """Docs, code, comments, configs: a clone has none of the files that the project was planned with."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell the project's files")
    problems = []
    for name in listed.stdout.splitlines():
        path = REPO_ROOT / name
        if name == "tests/test_docs.py" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # audio and other binary test data
            continue
        problems += [f"{name} names {ref!r}" for ref in OUTSIDE_REFERENCES if ref in text]
    assert not problems, "not in this repository:\n" + "\n".join(problems)


def test_every_page_is_linked_from_the_readme():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for page in doc_files()[1:]:
        assert f"(docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
    assert blocks(REPO_ROOT / "README.md"), "README.md lost its quick start"


def test_the_link_checks_know_githubs_anchors():
    assert _slug("The API document's modules") == "the-api-documents-modules"
    assert _slug("Audio, features, augmentation") == "audio-features-augmentation"
    assert _slug("`perf_analyzer`") == "perf_analyzer"
    assert "long-form-wer" in _anchors(REPO_ROOT / "docs" / "benchmarks.md")
