"""evaluate's results folder as a store, not a scratchpad: symbolic links planted in --out, tampered and
huge records, a huge --labels file, and the HTML report of a tampered folder. Runs go through
`hostile.run_cases` (the real CLI, forked, bounded) and must end in exit 2 and one line, or exit 0,
with nothing written outside --out."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hostile import assert_refused, run_cases

RSS_MB = 1500
CLIP = ["--frames", "2", "--size", "16x16"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A torch r2d_18 with 2 classes and one short real video (evaluate alone needs nothing more)."""
    from helpers import make_checkpoint, save_state

    from vrconvert.converter import video

    folder = tmp_path_factory.mktemp("model")
    save_state(make_checkpoint("r2d_18", num_classes=2, seed=3)[1], folder / "m.pth")
    (folder / "videos").mkdir()
    shutil.copyfile(video.SAMPLE_CLIP, folder / "videos" / "v.mp4")
    return folder


def _case(tmp_path: Path, name: str, model: Path, *extra, **more) -> dict:
    folder = tmp_path / name
    (folder / "out").mkdir(parents=True, exist_ok=True)
    (folder / "victim.txt").write_text("untouched\n")
    argv = ["evaluate", model / "m.pth", "--videos", model / "videos", *CLIP, "--out", "out", *extra]
    return {"id": name, "folder": folder, "argv": [str(a) for a in argv], "deadline": 60, **more}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, model):
    """A finished run's folder (made by the CLI itself), copied by the tests that tamper with it."""
    tmp = tmp_path_factory.mktemp("finished")
    result = run_cases([_case(tmp, "base", model)], tmp)["base"]
    assert result["code"] == 0, result["stderr"]
    return tmp / "base" / "out"


def _outside_untouched(case: dict) -> None:
    folder = Path(case["folder"])
    assert (folder / "victim.txt").read_text() == "untouched\n", case["id"]
    names = sorted(p.name for p in folder.iterdir() if p.name not in ("tmp", ".stdout", ".stderr"))
    assert names == ["out", "victim.txt"], (case["id"], names)


def test_evaluate_never_writes_through_symlinks(tmp_path, model, finished):
    """OUT/lock and OUT/results.jsonl as symbolic links (to a file outside, or dangling): the lock's
    target was truncated and overwritten with the pid, results' appended to, a dangling one created a
    file outside --out. Now each is refused in one line and nothing outside changes."""
    cases = []
    lock = _case(tmp_path, "lock_link", model)
    (Path(lock["folder"]) / "out" / "lock").symlink_to("../victim.txt")
    cases.append(lock)
    results = _case(tmp_path, "results_link_resume", model, "--resume")
    shutil.copytree(finished, Path(results["folder"]) / "out", dirs_exist_ok=True)
    (Path(results["folder"]) / "out" / "results.jsonl").unlink()
    (Path(results["folder"]) / "out" / "results.jsonl").symlink_to("../victim.txt")
    cases.append(results)
    dangling = _case(tmp_path, "results_dangling", model)
    (Path(dangling["folder"]) / "out" / "results.jsonl").symlink_to("../created.txt")
    cases.append(dangling)
    settings = _case(tmp_path, "settings_link", model, "--resume")
    shutil.copytree(finished, Path(settings["folder"]) / "out", dirs_exist_ok=True)
    (Path(settings["folder"]) / "out" / "run.json").unlink()
    (Path(settings["folder"]) / "out" / "run.json").symlink_to("../victim.txt")
    cases.append(settings)
    fifo = _case(tmp_path, "results_fifo", model)
    os.mkfifo(Path(fifo["folder"]) / "out" / "results.jsonl")
    cases.append(fifo)
    outcome = run_cases(cases, tmp_path)
    for case in cases:
        assert_refused(outcome[case["id"]], max_rss_mb=RSS_MB)
        _outside_untouched(case)
    assert "symbolic link" in outcome["lock_link"]["stderr"]


TAMPERED = {  # the review's nine, as edits of a finished folder: name -> (file, edit of its text)
    "json_list_line": ("results.jsonl", lambda t: t + "[1, 2]\n"),
    "line_without_key": ("results.jsonl", lambda t: t + '{"ok": true}\n'),
    "string_figure": (
        "results.jsonl",
        lambda t: t.replace('"max_rel_diff":null', '"max_rel_diff":"big"').replace(
            '"ok":true', '"ok":true,"max_rel_diff":"big"', 1
        ),
    ),
    "empty_top": ("results.jsonl", lambda t: t.replace('"torch":{"top":[', '"torch":{"top":[],"x":[', 1)),
    "ok_yes": ("results.jsonl", lambda t: t.replace('"ok":true', '"ok":"yes"', 1)),
    "settings_not_json": ("run.json", lambda t: "{not json"),
    "settings_not_object": ("run.json", lambda t: "[1]"),
    "deep_json": ("results.jsonl", lambda t: t + "[" * 100_000 + "\n"),
    "bad_utf8": ("results.jsonl", lambda t: t + '{"key": "\udcff"}\n'),
}


def test_tampered_results_folder_is_one_line_exit_2(tmp_path, model, finished):
    cases = []
    for name, (file, edit) in TAMPERED.items():
        case = _case(tmp_path, name, model, "--resume")
        out = Path(case["folder"]) / "out"
        shutil.copytree(finished, out, dirs_exist_ok=True)
        text = (out / file).read_text()
        edited = edit(text)
        assert edited != text, name
        (out / file).write_bytes(edited.encode("utf-8", "surrogateescape"))
        cases.append(case)
    outcome = run_cases(cases, tmp_path)
    for case in cases:
        assert_refused(outcome[case["id"]], max_rss_mb=RSS_MB)
        _outside_untouched(case)


def test_huge_result_line_on_resume_is_bounded(tmp_path, model, finished):
    """A 1.2 GB line in results.jsonl (sparse on disk) peaked at 5.8 GB on --resume."""
    case = _case(tmp_path, "huge_line", model, "--resume")
    out = Path(case["folder"]) / "out"
    shutil.copytree(finished, out, dirs_exist_ok=True)
    with open(out / "results.jsonl", "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b'{"key": "')
        f.seek(1_200_000_000, os.SEEK_CUR)
        f.write(b'"}\n')
    result = run_cases([case], tmp_path)["huge_line"]
    assert_refused(result, contains="longer than", max_rss_mb=RSS_MB)
    assert result["seconds"] < 10


def test_labels_are_streamed_with_a_line_cap(tmp_path, model):
    """A 240 MiB --labels CSV under the size cap peaked at 7.5 GB: it is now read a line at a time and
    only the rows of listed videos are kept. A single line over the cap is one line, exit 2."""
    big = _case(tmp_path, "labels_big", model, "--labels", "labels.csv")
    row = "videos/" + "x" * 200 + "/{:09d}.mp4,some label\n"
    with open(Path(big["folder"]) / "labels.csv", "w") as f:
        f.write("v.mp4,class_a\n")
        block = "".join(row.format(i) for i in range(10_000))
        for _ in range(240 * (1 << 20) // len(block) + 1):
            f.write(block)
    long_line = _case(tmp_path, "labels_long_line", model, "--labels", "labels.csv")
    (Path(long_line["folder"]) / "labels.csv").write_text("v.mp4," + "y" * (1 << 20) + "\n")
    outcome = run_cases([big, long_line], tmp_path)
    result = outcome["labels_big"]
    assert result["code"] == 0, result["stderr"][-2000:]
    assert result["rss_mb"] < RSS_MB and result["seconds"] < 60, result
    assert_refused(outcome["labels_long_line"], contains="longer than", max_rss_mb=RSS_MB)
    (Path(big["folder"]) / "labels.csv").unlink()


# --- the HTML report ---------------------------------------------------------------------------------------

INJECTION = '<img src=x onerror="alert(1)">'


def _report(folder: str, out: str) -> None:
    from vrconvert.converter.evaluate.report import evaluation_page

    evaluation_page(folder, out, 1e-5)


def _paired_record(key: str) -> dict:
    top = [{"index": 0, "name": INJECTION, "probability": 0.9}]
    return {
        "key": key, "video": key, "label": INJECTION, "label_index": None, "ok": True, "error": None,
        "worker": INJECTION, "torch": {"top": top}, "keras": {"top": top}, "max_abs_diff": 1e-7,
        "max_rel_diff": 1e-7, "cosine": 1.0, "top1_agree": True, "top5_agree": True, "worst_clip": 0,
    }  # fmt: skip


def test_report_escapes_every_field_of_a_tampered_folder(tmp_path):
    """A tampered layers.json (reused on --resume) put a raw <img onerror=...> into the report through
    its `op` field. The page is now one autoescaping template: no field of any file gets through."""
    pytest.importorskip("matplotlib")
    folder = tmp_path / "run"
    folder.mkdir()
    records = [_paired_record(INJECTION), {**_paired_record("b.mp4"), "ok": False, "error": INJECTION}]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "run.json").write_text(
        json.dumps({"torch_file": INJECTION, "keras_file": INJECTION, "clips": 1, "frames": 2})
    )
    layer = {
        "torch_module": INJECTION,
        "keras_layer": INJECTION,
        "op": INJECTION,
        "max_abs_diff": 1e-3,
        "max_rel_diff": 1e-3,
    }
    profile = {
        "video": INJECTION,
        "input": INJECTION,
        "tolerance": 1e-5,
        "layers": [layer],
        "first_divergence": INJECTION,
    }
    (folder / "layers.json").write_text(json.dumps(profile))
    case = {
        "id": "report",
        "folder": tmp_path,
        "argv": [],
        "call": ["test_security_store:_report", str(folder), str(tmp_path / "r.html")],
    }
    result = run_cases([case], tmp_path)["report"]
    assert result["code"] == 0, result["stderr"]
    page = (tmp_path / "r.html").read_text()
    assert "<img src=x" not in page and 'onerror="' not in page
    assert page.count("&lt;img src=x onerror=&#34;alert(1)&#34;&gt;") >= 8
    # and a layers.json that is not the schema is one line, exit 2
    for name, text in {
        "not_json": "{",
        "not_object": "[]",
        "string_tolerance": json.dumps({**profile, "tolerance": "x"}),
    }.items():
        (folder / "layers.json").write_text(text)
        bad = {**case, "id": name, "call": ["test_security_store:_report", str(folder), str(tmp_path / f"{name}.html")]}
        result = run_cases([bad], tmp_path)[name]
        assert result["code"] == 2 and result["stderr"].count("\n") == 1, (name, result["stderr"])
