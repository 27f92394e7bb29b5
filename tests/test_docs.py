"""Doc checks: README.md and docs/*.md stay short, linked and runnable.

- README.md has at most 200 lines, keeps the ``<!-- test-command -->`` block CI runs
  (``.ci/run``) and the fresh-clone training command, and links every docs page;
- every relative link in README.md and docs/*.md names a file (and heading) that exists,
  and docs/architecture.md names every module of the package;
- every ``python -m nlp_lstm ...`` command in their bash blocks (also after ``VAR=value``
  prefixes, after a pipe, or under ``torchrun ... -m nlp_lstm``) composes with Hydra as the
  CLI composes it, and each composed section passes its task's config dataclass; the task
  offers the mode and reports the monitored metric;
- every ``python scripts/<name>.py`` command names a script that exists and passes only
  ``--flags`` that the script's source mentions (a text check; nothing is imported);
- every Python block compiles; blocks marked ``<!-- doc-check: exec -->`` are run, and the
  README's Python lines are lines of the block tests/test_api.py runs (docs/python-api.md).

Other commands (pip install, bash .ci/run, echo ...) are not checked.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
FRESH_CLONE_TRAINING = "NLP_LSTM_DATA=../shared/data python -m nlp_lstm task=ner"
EXEC_MARK = "<!-- doc-check: exec -->"
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CONTROL = {"&&", "||", "|", ";", "&", "(", ")"}
REDIRECT = {">", ">>", "<", "2>", "&>"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marked_exec: bool


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    kind: str  # "nlp_lstm" or "script"
    words: tuple[str, ...]  # nlp_lstm: its arguments; script: the script path, then arguments

    @property
    def id(self) -> str:
        shown = " ".join(self.words)
        return f"{self.page.relative_to(ROOT)}:{self.line}:{shown[:70]}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        before = lines[start - 1].strip() if start > 0 else ""
        blocks.append(
            Block(page, start + 1, fence.group(1).lower(), "\n".join(body), before == EXEC_MARK)
        )
        i += 1
    return blocks


def simple_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped, split
    at ``&&``, ``|``, ``;``; redirections removed."""
    commands: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        tokens = iter(lexer)
        for token in tokens:
            if token in CONTROL:
                commands.append(current)
                current = []
            elif token in REDIRECT:
                next(tokens, None)
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def classify(words: list[str]) -> tuple[str, list[str]] | None:
    """``("nlp_lstm", arguments)``, ``("script", [path, arguments...])`` or None."""
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return None
    program = Path(words[0]).name
    if program in ("python", "python3"):
        if words[1:3] == ["-m", "nlp_lstm"]:
            return "nlp_lstm", words[3:]
        if len(words) > 1 and words[1].startswith("scripts/") and words[1].endswith(".py"):
            return "script", words[1:]
    if program == "torchrun":
        for i in range(1, len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "nlp_lstm":
                return "nlp_lstm", words[i + 2 :]
    return None


def commands_of(pages: list[Path]) -> list[Command]:
    found: list[Command] = []
    for page in pages:
        for block in code_blocks(page):
            if block.lang not in SHELL:
                continue
            for words in simple_commands(block.text):
                kind = classify(words)
                if kind:
                    found.append(Command(page, block.line, kind[0], tuple(kind[1])))
    return found


COMMANDS = commands_of(PAGES)
NLP_LSTM_COMMANDS = [c for c in COMMANDS if c.kind == "nlp_lstm"]
SCRIPT_COMMANDS = [c for c in COMMANDS if c.kind == "script"]
PYTHON_BLOCKS = [b for page in PAGES for b in code_blocks(page) if b.lang == "python"]


def first_of_sweep(value: str) -> str:
    """The first value of a Hydra sweep ``a,b,c`` (commas inside brackets or quotes are
    part of a value, not a sweep)."""
    depth, quote = 0, ""
    for i, char in enumerate(value):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            return value[:i]
    return value


def overrides_of(arguments: tuple[str, ...]) -> list[str]:
    """The ``key=value`` overrides of an nlp_lstm command line, as one job of a sweep."""
    multirun = any(a in ("--multirun", "-m") for a in arguments)
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    if multirun:
        overrides = [
            f"{key}={first_of_sweep(value)}" for key, value in (o.split("=", 1) for o in overrides)
        ]
    return overrides


# ---------------------------------------------------------------------------- README


def test_readme_is_short_and_keeps_the_ci_command():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert text.count("<!-- test-command -->") == 1
    block = text.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    body = block.split("```bash\n")[1].split("```")[0].strip().splitlines()
    assert len(body) == 1 and "pytest" in body[0], body  # .ci/run runs this line
    assert any(line.endswith(FRESH_CLONE_TRAINING) for line in text.splitlines())


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    linked = {(README.parent / link).resolve() for link in relative_links(text)}
    missing = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_readme_python_lines_are_run_by_the_api_test():
    """The README's short Python example is a subset of docs/python-api.md's
    ``<!-- python-api -->`` block, which tests/test_api.py executes."""
    api = (DOCS / "python-api.md").read_text(encoding="utf-8")
    executed = api.split("<!-- python-api -->")[1].split("```python")[1].split("```")[0]
    executed_lines = {line.strip() for line in executed.splitlines()}
    for block in code_blocks(README):
        if block.lang == "python":
            for line in block.text.splitlines():
                assert line.strip() in executed_lines, line


# ---------------------------------------------------------------------------- links


def links_with_anchors(text: str) -> list[tuple[str, str]]:
    """``(file, anchor)`` of every relative link (file "" for a link within the page)."""
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [tuple(link.partition("#")[::2]) for link in links if not re.match(r"^[a-z]+:", link)]


def relative_links(text: str) -> list[str]:
    return [file for file, _ in links_with_anchors(text) if file]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown page (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    found = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(page):
    broken = []
    for file, anchor in links_with_anchors(page.read_text(encoding="utf-8")):
        target = (page.parent / file) if file else page
        if not target.exists():
            broken.append(f"{file} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{file}#{anchor} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_architecture_page_names_every_module():
    """docs/architecture.md's layout lists every module of the package by file name."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "nlp_lstm"
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(package.rglob("*.py"))
        if path.name != "__init__.py"
        and "conf" not in path.relative_to(package).parts
        and not re.search(rf"\b{re.escape(path.name)}\b", text)
    ]
    assert not missing, f"docs/architecture.md does not list {missing}"


# ---------------------------------------------------------------------------- commands


def test_docs_show_commands():
    assert len(NLP_LSTM_COMMANDS) >= 20 and SCRIPT_COMMANDS


@pytest.fixture(scope="module")
def composer():
    from hydra import compose, initialize_config_dir

    from nlp_lstm.config import conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="nlp_lstm"):
        yield lambda overrides: compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("command", NLP_LSTM_COMMANDS, ids=lambda c: c.id)
def test_nlp_lstm_command_composes(command, composer):
    from nlp_lstm.cli import task_modes
    from nlp_lstm.config import conf_dir, task_module, to_dataclass
    from nlp_lstm.data.vectors import EmbeddingsConfig
    from nlp_lstm.export import ExportConfig
    from nlp_lstm.inside import InspectConfig
    from nlp_lstm.serve.settings import ServeConfig
    from nlp_lstm.train.trainer import TrainerConfig

    overrides = overrides_of(command.words)
    groups = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if "debug" in groups and not (conf_dir() / "debug" / "tiny.yaml").is_file():
        pytest.skip("conf/debug/tiny.yaml not there yet")
    cfg = composer(overrides)
    module = task_module(cfg.task.name)
    for section, cls in module.SCHEMAS.items():
        if section in cfg:
            to_dataclass(cls, cfg[section], section)
    to_dataclass(TrainerConfig, cfg.trainer, "trainer")
    if "embeddings" in cfg:
        to_dataclass(EmbeddingsConfig, cfg.embeddings, "embeddings")
    to_dataclass(ExportConfig, cfg.export, "export")
    to_dataclass(ServeConfig, cfg.serve, "serve")
    to_dataclass(InspectConfig, cfg.inspect, "inspect")
    assert cfg.mode in task_modes(cfg.task.name), f"task {cfg.task.name} has no mode {cfg.mode}"
    assert cfg.task.monitor in module.METRICS


@pytest.mark.parametrize("command", SCRIPT_COMMANDS, ids=lambda c: c.id)
def test_script_command_names_a_script_and_its_flags(command):
    script = ROOT / command.words[0]
    assert script.is_file(), f"{command.words[0]} does not exist"
    source = script.read_text(encoding="utf-8")
    flags = [w.split("=", 1)[0] for w in command.words[1:] if w.startswith("--")]
    unknown = [f for f in flags if f'"{f}"' not in source]
    assert not unknown, f"{command.words[0]} takes no {unknown}"


# ---------------------------------------------------------------------------- python


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=lambda b: f"{b.page.relative_to(ROOT)}:{b.line}"
)
def test_python_block_compiles(block):
    ast.parse(block.text, filename=str(block.page))


@pytest.mark.parametrize(
    "block",
    [b for b in PYTHON_BLOCKS if b.marked_exec],
    ids=lambda b: f"{b.page.relative_to(ROOT)}:{b.line}",
)
def test_marked_python_block_runs(block):
    exec(compile(block.text, f"{block.page.name}:{block.line}", "exec"), {})
