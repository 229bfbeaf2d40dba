"""Command-line plumbing: the demo's variant choice and re-running a command under another Keras backend."""

from __future__ import annotations

import subprocess

import click
from click.testing import CliRunner
from helpers import invoke

from vrconvert.cli import backend


def test_demo_refuses_an_unknown_variant_in_one_line(tmp_path, capsys):
    code, _, err = invoke(["demo", "--arch", "no_such_net", "--out", tmp_path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert "no_such_net" in err and not any(tmp_path.iterdir())


def test_demo_runs_a_variant_torchvision_publishes_no_weights_for(tmp_path, capsys):
    code, out, err = invoke(["demo", "--arch", "r2d_18", "--out", tmp_path], capsys)
    assert code == 0, err
    assert "torchvision publishes no weights for r2d_18" in out and "bit-exact" in out


def test_a_rerun_passes_each_item_of_a_many_valued_argument(monkeypatch):
    seen = {}

    def fake_run(argv, **_):
        seen["argv"] = argv
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(backend.subprocess, "run", fake_run)

    @click.command("evaluate")
    @click.argument("models", nargs=-1, type=click.Path())
    @click.option("--videos")
    def command(models, videos):
        backend.rerun_with_backend("jax")

    result = CliRunner().invoke(command, ["a.pth", "b.keras", "--videos", "v"])
    assert result.exit_code == 0, result.output
    assert seen["argv"][-6:] == ["evaluate", "--videos", "v", "--", "a.pth", "b.keras"]
