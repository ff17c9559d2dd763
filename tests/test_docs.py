"""The README and docs/ say only what works: every ``rnnlab-*`` command they show composes
its config with Hydra as written (no training), every relative link points at a file
(and a heading) that exists, and the README stays short enough to read in five minutes.

Commands are read from fenced code blocks (with ``\\`` continuations and ``# comments``)
and from inline code. Paths the reader supplies are written ``.../`` or ``<...>``; the
test puts its own paths there. Hydra composes in struct mode, so a documented override
naming a key that does not exist fails here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from rnnlab.cli.app import compose_config
from tests.conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
#: each console script and the config it composes (rnnlab-compare takes directories)
CONFIG_NAMES = {
    "rnnlab-train": "train",
    "rnnlab-sample": "sample",
    "rnnlab-eval": "eval",
    "rnnlab-export": "export",
    "rnnlab-inspect": "inspect",
}
PLACEHOLDER = "PLACEHOLDER"
README_MAX_LINES = 250


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def fenced_lines(text: str) -> list[tuple[int, str, bool]]:
    """Every line with its number and whether it sits inside a fenced code block."""
    inside, lines = False, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        lines.append((number, line, inside))
    return lines


def commands_in(page: Path) -> list[Command]:
    """The ``rnnlab-*`` commands of a page: fenced lines (joined over ``\\``) and inline code."""
    name, found, pending = page.relative_to(REPO).as_posix(), [], None
    for number, line, inside in fenced_lines(page.read_text(encoding="utf-8")):
        if inside:
            if pending is not None:
                pending = (pending[0], pending[1] + " " + line.strip())
            elif line.lstrip().startswith("rnnlab-"):
                pending = (number, line.strip())
            if pending is not None and not pending[1].endswith("\\"):
                found.append(Command(name, *pending))
                pending = None
            elif pending is not None:
                pending = (pending[0], pending[1][:-1].rstrip())
        else:
            found += [Command(name, number, c) for c in re.findall(r"`(rnnlab-[^`]*)`", line)]
    return found


def words(command: str) -> list[str]:
    """The command as the shell splits it (quotes removed, ``# comment`` dropped), with
    ``<...>`` placeholders as one word."""
    return shlex.split(re.sub(r"<[^<>]*>", PLACEHOLDER, command), comments=True)


def own_value(key: str, tmp_path: Path) -> str:
    """The test's own path for a placeholder: a real text file where text is read."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus\n" * 50, encoding="utf-8")
    if key in ("data.path", "text"):
        return str(corpus)
    if key == "ckpt_path":
        return str(tmp_path / "run/checkpoints/last.ckpt")
    return str(tmp_path / "run")


def with_own_paths(overrides: list[str], tmp_path: Path) -> list[str]:
    """Placeholders (``.../x``, ``<x>``) replaced by the test's paths; the rest as written."""
    replaced = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and ("..." in value or PLACEHOLDER in value):
            override = f"{key}={own_value(key, tmp_path)}"
        replaced.append(override)
    return replaced


def jobs(overrides: list[str]) -> list[list[str]]:
    """A multirun's jobs to compose: job i takes the i-th value of every sweep (wrapping),
    so every value of every sweep is composed at least once."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = {
        i: list(o.sweep_string_iterator()) for i, o in enumerate(parsed) if o.is_sweep_override()
    }
    count = max((len(values) for values in sweeps.values()), default=1)
    return [
        [
            f"{o.get_key_element()}={sweeps[i][job % len(sweeps[i])]}" if i in sweeps else raw
            for i, (o, raw) in enumerate(zip(parsed, overrides, strict=True))
        ]
        for job in range(count)
    ]


def check_command(command: str, tmp_path: Path) -> int:
    """Compose every job of a documented command; how many were composed."""
    script, *args = words(command)
    if script == "rnnlab-compare":
        paths = [a for a in args if not a.startswith("-")]
        assert not args or any("/" in a or PLACEHOLDER in a for a in paths), (
            f"rnnlab-compare takes run or sweep directories, got {args}"
        )
        return 0
    assert script in CONFIG_NAMES, f"unknown console script {script}"
    multirun = "-m" in args or "--multirun" in args
    overrides = with_own_paths([a for a in args if a not in ("-m", "--multirun")], tmp_path)
    composed = 0
    for job in jobs(overrides) if multirun else [overrides]:
        compose_config(CONFIG_NAMES[script], job, output_dir=tmp_path / "out")
        composed += 1
    return composed


ALL_COMMANDS = [command for page in PAGES for command in commands_in(page)]


def test_the_pages_show_commands():
    """The extraction finds what the pages show: the README's table, fenced blocks with
    continuations, and commands in every docs page that has them."""
    pages = {c.page for c in ALL_COMMANDS}
    assert {"README.md", "docs/guide.md", "docs/cells.md", "docs/results.md"} <= pages
    texts = [c.text for c in ALL_COMMANDS]
    assert "rnnlab-sample ckpt_path=.../last.ckpt temperature=0.8" in texts
    sweep = "rnnlab-train -m model.backend=builtin,custom model.hidden_size=128,256"
    assert any(t.startswith(sweep + " data.seq_len=32,64") for t in texts)
    assert len(ALL_COMMANDS) >= 60


#: each distinct command once, where it first appears (the README repeats the guide's)
DISTINCT_COMMANDS = list({c.text: c for c in reversed(ALL_COMMANDS)}.values())[::-1]


@pytest.mark.parametrize("command", DISTINCT_COMMANDS, ids=str)
def test_every_documented_command_composes(command: Command, tmp_path: Path):
    check_command(command.text, tmp_path)


def test_a_sweep_composes_every_value(tmp_path: Path):
    command = "rnnlab-train -m model.cell=rnn,gru,lstm seed=1,2  # three jobs cover all five"
    assert jobs(words(command)[2:]) == [
        ["model.cell=rnn", "seed=1"],
        ["model.cell=gru", "seed=2"],
        ["model.cell=lstm", "seed=1"],
    ]
    assert check_command(command, tmp_path) == 3


@pytest.mark.parametrize(
    "command",
    [
        "rnnlab-train model.no_such_setting=1",
        "rnnlab-train -m model.hidden_size=32,64 data.no_such_key=2",
        "rnnlab-eval ckpt_path=.../best.ckpt splitt=val",
        "rnnlab-train experiment=no_such_preset",
    ],
)
def test_a_documented_key_that_does_not_exist_fails(command: str, tmp_path: Path):
    with pytest.raises((HydraException, OmegaConfBaseException)):
        check_command(command, tmp_path)


def test_placeholders_become_the_tests_paths(tmp_path: Path):
    args = words("rnnlab-eval ckpt_path=.../best.ckpt data.path=<your text> split=val")[1:]
    ckpt, data, split = with_own_paths(args, tmp_path)
    assert ckpt == f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}"
    assert data == f"data.path={tmp_path / 'corpus.txt'}" and split == "split=val"
    assert Path(data.partition("=")[2]).read_text().startswith("a small corpus")


def test_the_readme_reads_in_five_minutes():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings (outside code blocks)."""
    found = set()
    for _, line, inside in fenced_lines(page.read_text(encoding="utf-8")):
        if not inside and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            found.add("".join(c for c in title if c.isalnum() or c in " -_").replace(" ", "-"))
    return found


LINKS = [
    (page, number, target)
    for page in PAGES
    for number, line, inside in fenced_lines(page.read_text(encoding="utf-8"))
    if not inside
    for target in re.findall(r"\]\(([^)\s]+)\)", line)
    if not re.match(r"[a-z]+:", target)
]


@pytest.mark.parametrize(
    ("page", "number", "target"),
    LINKS,
    ids=[f"{p.relative_to(REPO).as_posix()}:{n}:{t}" for p, n, t in LINKS],
)
def test_every_relative_link_points_at_what_exists(page: Path, number: int, target: str):
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.name}:{number}: {target} does not exist"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{page.name}:{number}: no heading #{anchor}"


def test_links_are_found():
    assert len(LINKS) >= 40
    assert any(t == "docs/results.md#baselines" for _, _, t in LINKS)
