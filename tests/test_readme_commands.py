"""Every ``python train.py`` / ``python scripts/<name>.py`` command in the README's ```bash blocks
runs offline as written.

The commands are read from README.md, so this follows the README as it changes. Each is checked
the cheap way its script allows: a Hydra script's overrides compose against its config (a
sweep's first job), a training command's backbone gets its pretrained weights with the network
switched off (unless the command has placeholders such as ``<same overrides>``), an argparse
script parses its arguments; ``--help`` and ``debug=...`` commands run
for real (in this process), and so does the first training command, with tiny overrides.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.error
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch.hub
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig

from fitlens.cli import user_message
from fitlens.config import validate_config
from tests.conftest import CONF, ROOT
from tests.test_cli_errors import run_entry

README = ROOT / "README.md"
#: What turns a README training command into a seconds-long one on the tiny photos.
TINY_RUN = ["data.image_size=32", "data.batch_size=8", "trainer.max_epochs=1",
            "data.reject_root=null", "logger=csv"]


@dataclass(frozen=True)
class Command:
    script: str
    args: tuple[str, ...]
    line: str

    def __str__(self) -> str:
        return " ".join(["python", self.script, *self.args])

    @property
    def multirun(self) -> bool:
        return "-m" in self.args or "--multirun" in self.args

    @property
    def template(self) -> bool:
        """A command with placeholders (``<same overrides>``): its settings are not all there."""
        return any({"<", ">"} & set(a) for a in self.args)

    @property
    def overrides(self) -> list[str]:
        """The key=value arguments, without placeholders a user fills in (``<run>``,
        ``<same overrides>``)."""
        return [a for a in self.args if not a.startswith("-") and not {"<", ">"} & set(a)]


def readme_commands(text: str) -> list[Command]:
    """The python commands of every ```bash block: continuation lines joined, comments dropped,
    ``a && b`` split at the operator, output redirection dropped, ``python -m ...`` (the test
    suite) left out."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            part: list[str] = []
            redirected = False
            for word in [*words, "&&"]:
                if word not in ("&&", ";", "||", "|"):
                    redirected |= word in (">", ">>", "2>&1")
                    if not redirected:
                        part.append(word)
                    continue
                if len(part) >= 2 and part[0] == "python" and part[1].endswith(".py"):
                    found.append(Command(part[1], tuple(part[2:]), line.strip()))
                part, redirected = [], False
    return found


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _hydra_config_name(script: Path) -> str | None:
    match = re.search(r'@hydra\.main\([^)]*config_name="([^"]+)"', script.read_text("utf-8"))
    return match.group(1) if match else None


def first_job(overrides: list[str]) -> list[str]:
    """A sweep's first job: every swept value (``a,b,c``, ``range(5)``) replaced by its first."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = []
    for override, text in zip(parsed, overrides, strict=True):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            jobs.append(f"{override.get_key_element()}={first}")
        else:
            jobs.append(text)
    return jobs


def compose_for(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides,
                           return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@cache
def _weights_offline(target: str, pretrained: bool, weights_path: str | None) -> str | None:
    """None if the backbone gets its weights without the network, else the error."""
    try:
        instantiate({"_target_": target, "pretrained": pretrained, "weights_path": weights_path})
    except Exception as exc:
        return user_message(exc) or f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No downloads, and no ImageNet weights cached from one (torch hub in a fresh folder)."""
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_the_readme_has_commands_to_check() -> None:
    scripts = {c.script for c in COMMANDS}
    assert "train.py" in scripts and len(COMMANDS) >= 10, COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=[str(c) for c in COMMANDS])
def test_readme_command_works_offline(command: Command, offline: None) -> None:
    script = ROOT / command.script
    assert script.is_file(), f"the README runs {command.script}, which does not exist"
    if "--help" in command.args or "-h" in command.args:
        return  # run for real in test_help_and_debug_commands_run
    config_name = _hydra_config_name(script)
    if config_name is None:  # an argparse script: its parser, or its --help with these args
        if script.name == "predict.py":
            from scripts.predict import parser

            parser().parse_args(list(command.args))
        else:
            done = subprocess.run([sys.executable, str(script), *command.args, "--help"],
                                  capture_output=True, text=True, timeout=120, cwd=ROOT)
            assert done.returncode == 0, done.stderr
        return
    overrides = first_job(command.overrides) if command.multirun else command.overrides
    cfg = compose_for(config_name, overrides)
    if config_name != "train" or command.template:
        return
    validate_config(cfg)
    backbone = cfg.model.backbone
    problem = _weights_offline(backbone._target_, bool(backbone.pretrained),
                               backbone.get("weights_path"))
    assert problem is None, f"{command.line}\nneeds the network for its weights: {problem}"


RUNNABLE = [c for c in COMMANDS if c.script == "train.py" and not c.multirun
            and ("--help" in c.args or any(a.startswith("debug=") for a in c.args))]


@pytest.mark.parametrize("command", RUNNABLE, ids=[str(c) for c in RUNNABLE])
def test_help_and_debug_commands_run(command: Command, tmp_path: Path, image_root: Path,
                                     offline: None, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    args = list(command.args)
    if "--help" not in args:
        args += [f"data.root={image_root}", *TINY_RUN]
    ran = run_entry(command.script, args, monkeypatch, capsys)
    assert ran.code == 0, ran.out + ran.err


@pytest.mark.slow
def test_the_first_training_command_trains(tmp_path: Path, image_root: Path, offline: None,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The README's first training command, as written plus tiny-data overrides, trains and ends
    with its summary (the README's pretrained backbone, offline)."""
    command = next(c for c in COMMANDS if c.script == "train.py" and not c.multirun
                   and not {"--help", "--cfg"} & set(c.args))
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    ran = run_entry("train.py", [*command.overrides, f"data.root={image_root}", *TINY_RUN],
                    monkeypatch, capsys)
    assert ran.code == 0, ran.out + ran.err
    assert "── fitlens run" in ran.out and "next             python scripts/" in ran.out
