"""Options declared once and errors mapped once: every scoring command offers ScorerOptions with the library's
defaults, a DGIQAError leaving any command exits with its code in one line, and an interrupted run ends alike."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import signal
from pathlib import Path

import pytest
import typer
from conftest import FIXTURES, PICTURES
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.cli.common import DGIQAGroup, run_outcome
from dgiqa_cli.cli.options import MODEL_OPTIONS, ScorerOptions, with_options
from dgiqa_cli.errors import EXIT_BUSY, DGIQAError

runner = CliRunner()
SCORING_COMMANDS = ("score", "batch", "explain", "eval", "serve")
DEFAULTS = dataclasses.asdict(ScorerOptions())


def command(name: str):
    return typer.main.get_command(app).commands[name]


def help_lines(name: str) -> dict[str, str]:
    """``dgiqa NAME --help``, one entry per option: the option's line(s) of the rich table, joined."""
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines, current = {}, None
    for line in result.stdout.splitlines():
        found = re.match(r"│\s+(--[a-z0-9-]+)", line)
        if found:
            current = found.group(1)
            lines[current] = line
        elif current and line.startswith("│"):
            lines[current] += " " + line
    return {option: " ".join(text.replace("│", " ").split()) for option, text in lines.items()}


@pytest.mark.parametrize("name", SCORING_COMMANDS)
def test_every_scoring_command_offers_the_shared_options_with_their_defaults(name):
    shown = help_lines(name)
    for field in dataclasses.fields(ScorerOptions):
        option = "--" + field.name.replace("_", "-")
        assert option in shown, (name, option)
        default = re.search(r"\[default: ([^\]]+)\]", shown[option])
        if field.default is None:
            assert default is None, (name, option, shown[option])  # "Default: ..." is said in words instead
        else:
            assert default is not None and default.group(1) == str(field.default), (name, option, shown[option])
    # and what the command receives when nothing is given: the dataclass's defaults, choices as plain strings
    context = command(name).make_context(name, ["x.png"] if name in ("score", "explain") else [])
    received = {key: getattr(context.params[key], "value", context.params[key]) for key in DEFAULTS}
    assert received == DEFAULTS


def test_report_offers_the_model_options_only():
    shown = help_lines("report")
    offered = {f"--{name.replace('_', '-')}" for name in MODEL_OPTIONS}
    assert offered <= set(shown)
    assert not {"--crops", "--crop-mode", "--seed", "--max-pixels"} & set(shown)  # read from the run's rows


def test_the_defaults_are_the_librarys():
    from dgiqa_cli.inference.scorer import Scorer
    from dgiqa_cli.io import images

    library = {
        name: parameter.default for name, parameter in inspect.signature(Scorer).parameters.items() if name in DEFAULTS
    }
    assert library == DEFAULTS
    assert ScorerOptions().max_pixels == images.MAX_PIXELS


def test_with_options_packs_the_values_into_the_dataclass():
    seen = []
    toy = typer.Typer(cls=DGIQAGroup)
    toy.callback()(lambda: None)

    @toy.command()
    @with_options(options=("crops", "crop_mode", "device"))
    def run(path: str, *, options: ScorerOptions, loud: bool = False) -> None:
        seen.append((path, options, loud))

    result = runner.invoke(toy, ["run", "a.png", "--crops", "3", "--crop-mode", "grid", "--loud"])
    assert result.exit_code == 0, result.output
    assert seen == [("a.png", dataclasses.replace(ScorerOptions(), crops=3, crop_mode="grid"), True)]
    assert type(seen[0][1].crop_mode) is str  # the Enum Typer parsed, as the library takes it
    refused = runner.invoke(toy, ["run", "a.png", "--seed", "1"])  # not offered by this command
    assert refused.exit_code == 2 and "No such option: --seed" in refused.output

    def paint(*, options: ScorerOptions) -> None: ...

    with pytest.raises(TypeError, match="ScorerOptions has no option colour"):
        with_options(options=("colour",))(paint)
    with pytest.raises(TypeError, match="no parameter settings holds options"):
        with_options(settings=("crops",))(run.__wrapped__)


class DiskQuotaError(DGIQAError):
    exit_code = 77


def test_a_dgiqa_error_leaving_a_command_exits_with_its_code_in_one_line():
    toy = typer.Typer(cls=DGIQAGroup)
    toy.callback()(lambda: None)

    @toy.command()
    def fill() -> None:
        raise DiskQuotaError("out.csv: over quota\nfree some space, then run again with --resume")

    @toy.command()
    def crash() -> None:
        raise RuntimeError("a bug keeps its traceback")

    result = runner.invoke(toy, ["fill"], catch_exceptions=False)
    assert result.exit_code == 77
    assert result.stderr == "error: out.csv: over quota free some space, then run again with --resume\n"
    assert result.stdout == ""
    with pytest.raises(RuntimeError, match="a bug keeps its traceback"):
        runner.invoke(toy, ["crash"], catch_exceptions=False)


def test_the_weights_group_maps_library_errors_on_its_own_too(tmp_path):
    from dgiqa_cli.cli.weights import weights_app

    result = runner.invoke(weights_app, ["info", str(tmp_path / "here.pth")], catch_exceptions=False)
    assert result.exit_code == 2  # UnknownWeightsError: what was typed names nothing
    assert result.stderr == f"error: {tmp_path / 'here.pth'}: no such weights file\n"


def test_an_output_held_by_another_run_stops_eval_with_75_before_any_model(tmp_path):
    from dgiqa_cli.io.rows import lock_outputs

    labels = tmp_path / "ratings.csv"
    labels.write_text("path,mos\n" + "".join(f"{FIXTURES / name},{i}\n" for i, name in enumerate(PICTURES)))
    out = tmp_path / "results"
    out.mkdir()
    with lock_outputs([out / "scores.csv"]):
        result = runner.invoke(app, ["eval", "--labels", str(labels), "--split", "all", "--out", str(out)])
    assert result.exit_code == EXIT_BUSY, result.output
    assert "being written by another dgiqa run" in " ".join(result.stderr.split())


def ctrl_c() -> None:
    raise KeyboardInterrupt


def sigterm() -> None:
    signal.raise_signal(signal.SIGTERM)  # delivered to this (the main) thread before the call returns


@pytest.mark.parametrize(("stop", "code", "word"), [(ctrl_c, 130, "interrupted"), (sigterm, 143, "terminated")])
def test_a_stopped_run_says_what_was_kept_and_exits_130_or_143(stop, code, word):
    calls = []
    toy = typer.Typer()

    @toy.command()
    def run() -> None:
        with run_outcome(lambda: f"{len(calls)} rows kept; run again with --resume", lambda: calls.append(1)):
            stop()

    before = signal.getsignal(signal.SIGTERM)
    result = runner.invoke(toy, [], catch_exceptions=False)
    assert result.exit_code == code
    assert result.stderr == f"{word}: 0 rows kept; run again with --resume\n"  # kept is asked before on_interrupt
    assert calls == [1]
    assert signal.getsignal(signal.SIGTERM) is before  # the run's SIGTERM handler is gone with it


def test_run_outcome_lets_library_errors_through_to_the_one_handler():
    toy = typer.Typer(cls=DGIQAGroup)
    toy.callback()(lambda: None)

    @toy.command()
    def run() -> None:
        with run_outcome("nothing kept"):
            raise DiskQuotaError("no room")

    result = runner.invoke(toy, ["run"], catch_exceptions=False)
    assert result.exit_code == 77 and result.stderr == "error: no room\n"


def test_the_command_line_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, dgiqa_cli.cli; print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"  # `dgiqa --help` and usage errors stay fast


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "--csv", "rows.csv", "--parquet", "out"], "--ray writes --parquet FOLDER only; drop --csv"),
        (["--ray"], "--ray needs --parquet FOLDER"),
        (["--heatmaps-worst", "2"], "--heatmaps-worst needs --heatmaps DIR"),
        (["--from-list", "no-such-list.txt"], "--from-list no-such-list.txt: no such file"),
    ],
)
def test_batch_option_groups_reach_its_checks(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["batch", str(FIXTURES), *args], catch_exceptions=False)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
