import csv

from embodied_rl.cli import main


def test_demo_writes_video_and_success_table(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--episodes",
            "2",
            "--tasks",
            "tabletop/reach-v0",
            "tabletop/pick-v0",
            "--video-size",
            "64",
        ]
    )
    assert code == 0
    assert (out / "rollouts.mp4").stat().st_size > 1000
    rows = list(csv.DictReader((out / "success.csv").open()))
    assert [r["task"] for r in rows] == ["reach", "pick", "all"]
    assert all(float(r["success_rate"]) == 1.0 for r in rows)
    assert "| reach | 2 | 100% |" in (out / "success.md").read_text()


def test_cli_reports_bad_task_cleanly(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--tasks", "tabletop/fly-v0"])
    assert code == 2
    assert "unknown task_id" in capsys.readouterr().err


def test_tasks_lists_both_suites(capsys):
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out.split()
    assert "tabletop/stack-v0" in listed and "metaworld/pick-place-v3" in listed
