"""The guides in docs/ cannot drift from the software: their shell blocks run or are checked.

Convention for fenced code blocks in ``docs/*.md``:

- `` ```bash `` blocks **run**, in order, each document in its own temporary working folder that
  holds links to the repository's ``data_samples/`` and ``configs/`` (so the commands read as
  typed at the root of a checkout), with this environment's ``idou`` first on PATH, a
  temporary mlflow store and model cache, and ``bash -euo pipefail``.
- `` ```bash norun `` blocks (cluster set-ups, long trainings) do not run; every
  ``idou SUBCOMMAND`` they name must exist (``idou SUBCOMMAND --help`` exits 0) and every
  ``--option`` they pass must appear in that help.
- Other blocks (``toml``, ``text``, ``json``) are illustrations.

Every ``idou`` command of a running block is checked the same way too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
IDOU = str(BIN / "idou")
FENCE = re.compile(r"^```bash(?P<flags>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
# words after which a command starts (torchrun --no-python runs the next word as the program)
SEPARATORS = {"&&", "||", ";", "|", "then", "do", "timeout", "exec", "!", "--no-python"}
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
GROUPS = {"samples", "finetune"}  # groups: their first word is a subcommand too


def blocks(path: Path) -> list[tuple[bool, str]]:
    """(runs, body) of every ```bash block of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    return [("norun" not in m["flags"].split(), m["body"]) for m in FENCE.finditer(text)]


def idou_commands(body: str) -> list[list[str]]:
    """The argument lists after each ``idou`` word of a shell block (continuations joined)."""
    joined = body.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for i, word in enumerate(words):
            at_start = i == 0 or words[i - 1] in SEPARATORS or ENV_ASSIGN.match(words[i - 1])
            if Path(word).name == "idou" and at_start:
                rest = []
                for w in words[i + 1:]:
                    if w in SEPARATORS or w.startswith((">", "2>")):
                        break
                    rest.append(w)
                found.append(rest)
    return found


@cache
def help_text(*subcommand: str) -> str:
    done = subprocess.run([IDOU, *subcommand, "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}, timeout=120)
    assert done.returncode == 0, f"`idou {' '.join(subcommand)} --help` failed: {done.stderr}"
    return done.stdout


def check_command(args: list[str], where: str) -> None:
    """``args`` (after ``idou``) names a real subcommand and only options it has."""
    if not args or args[0].startswith("-"):
        for opt in args:
            assert opt.split("=")[0] in help_text(), f"{where}: idou has no option {opt}"
        return
    sub = [args[0]]
    if args[0] in GROUPS and len(args) > 1 and not args[1].startswith("-"):
        sub.append(args[1])
    text = help_text(*sub)
    for word in args[len(sub):]:
        if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
            option = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"{where}: `idou {' '.join(sub)}` has no option {option}")


DOC_FILES = sorted(DOCS.glob("*.md"))
GUIDES = [p for p in DOC_FILES if blocks(p)]


def test_guides_have_checked_commands() -> None:
    names = {p.name for p in GUIDES}
    assert {"ml_guide.md", "operator_guide.md"} <= names


@pytest.mark.parametrize("doc", GUIDES, ids=lambda p: p.name)
def test_commands_exist_with_their_options(doc: Path) -> None:
    commands = [(n, args) for n, (_, body) in enumerate(blocks(doc), 1)
                for args in idou_commands(body)]
    assert commands, f"{doc.name} has bash blocks but no idou command was found in them"
    for n, args in commands:
        check_command(args, f"{doc.name} block {n}")


def test_checker_catches_a_wrong_option() -> None:
    with pytest.raises(AssertionError, match="no option --no-such-option"):
        check_command(["detect", "a.tif", "b.tif", "--no-such-option"], "self-test")
    with pytest.raises(AssertionError, match="failed"):
        check_command(["no-such-command"], "self-test")


@pytest.mark.slow
@pytest.mark.parametrize("doc", [p for p in GUIDES if any(r for r, _ in blocks(p))],
                         ids=lambda p: p.name)
def test_runnable_blocks_run(doc: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("data_samples", "configs", "models"):
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "IDOU_MODEL_CACHE": str(tmp_path / "model-cache"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "COLUMNS": "120",
        "NO_COLOR": "1",
    }
    for n, (runs, body) in enumerate(blocks(doc), 1):
        if not runs:
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (
            f"{doc.name} block {n} exited {done.returncode}:\n{body}\n--- stdout\n"
            f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


def test_staff_guide_names_what_staff_see() -> None:
    """Layer names, review fields and their values in the Japanese guide are the real ones."""
    from idou.geo.review.qgis_project import DISPLAY_NAMES
    from idou.geo.review.qgis_styles import LAYER_STYLES
    from idou.geo.review.review_fields import ALIASES, REVIEW_FIELDS, STATUS_VALUES

    guide = (DOCS / "staff_guide_ja.md").read_text(encoding="utf-8")
    layers = [name for key, name in DISPLAY_NAMES.items() if key != "run_info"]
    missed_choices = [label for label, _ in LAYER_STYLES["missed"].value_maps["channel"]]
    for name in [*layers, *REVIEW_FIELDS, *STATUS_VALUES, *missed_choices,
                 ALIASES["score_max"], ALIASES["priority"], "recall_target"]:
        assert name in guide, f"docs/staff_guide_ja.md does not mention {name}"
