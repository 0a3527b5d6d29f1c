"""The offline-to-online benchmark runner: suites, tables, and a resumable grid on Ray."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from embodied_rl.agents.checkpoint import latest_checkpoint
from embodied_rl.cli import build_parser
from embodied_rl.datasets import load_dataset
from embodied_rl.runners.benchmark import (
    RESULTS,
    execute_run,
    grid,
    load_suite,
    markdown_tables,
    pending,
    prepare_dataset,
    result_path,
    run_benchmark,
    run_progress,
    suite_from_dict,
    summarize,
)

TINY = {
    "name": "tiny",
    "description": "test suite",
    "tasks": [
        {
            "name": "reach",
            "env_id": "tabletop/reach-v0",
            "episodes": 3,
            "env_kwargs": {"n_objects": 1},
            "reference_episodes": 1,
        }
    ],
    "offline_steps": 6,
    "batch_size": 16,
    "hidden": [16],
    "online": {
        "env_steps": 60, "batch_size": 16, "eval_every": 30, "eval_episodes": 1,
        "checkpoint_every": 30, "log_every": 30,
    },
    "agents": {"iql": {"hidden": [16]}, "calql": {"hidden": [16], "n_actions": 2}},
}  # fmt: skip


def test_shipped_suites_load_and_bad_keys_are_named(tmp_path):
    small = load_suite("small")
    assert [t.name for t in small.tasks] == ["reach", "push"]
    assert small.online_config(2).seed == 2 and small.online_config(0).mixing_ratio == 0.5
    assert load_suite("medium").offline_steps > small.offline_steps
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['env_step'\]"):
        suite_from_dict({**TINY, "online": {"env_step": 5}})
    with pytest.raises(ValueError, match=r"tasks\[0\]: unknown key\(s\) \['tier_name'\]"):
        suite_from_dict({**TINY, "tasks": [{**TINY["tasks"][0], "tier_name": "x"}]})
    with pytest.raises(ValueError, match=r"agents\.iql: unknown key\(s\) \['alpha'\]"):
        suite_from_dict({**TINY, "agents": {"iql": {"alpha": 1.0}}})
    with pytest.raises(ValueError, match="online.seed is set per run"):
        suite_from_dict({**TINY, "online": {"seed": 3}})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "name"}))
    assert load_suite(path).name == "mine"
    with pytest.raises(FileNotFoundError, match="known: .*small"):
        load_suite("nonexistent")
    quick = load_suite("small", ["offline_steps=7", "online.env_steps=9"])
    assert quick.offline_steps == 7 and quick.online_config(0).env_steps == 9
    with pytest.raises(
        ValueError, match=r"with offline_step=7.*unknown key\(s\) \['offline_step'\]"
    ):
        load_suite("small", ["offline_step=7"])


def test_grid_and_pending(tmp_path):
    suite = suite_from_dict(TINY)
    specs = grid(suite, ["iql", "calql"], 2)
    assert [s.run_id for s in specs] == [
        "reach-iql-s0",
        "reach-iql-s1",
        "reach-calql-s0",
        "reach-calql-s1",
    ]
    result_path(tmp_path, specs[1]).parent.mkdir()
    result_path(tmp_path, specs[1]).write_text("{}")
    assert pending(specs, tmp_path) == [specs[0], *specs[2:]]
    with pytest.raises(ValueError, match="choose one or more of"):
        grid(suite, ["bc"], 1)


def test_run_progress_reads_the_steps_a_running_run_reached(tmp_path):
    """erl bench's in-run progress: offline gradient steps then online environment steps."""
    suite = suite_from_dict(TINY)  # 6 offline steps, 60 environment steps
    run = tmp_path / "reach-iql-s0"
    assert run_progress(run, suite) == 0.0  # not started
    (run / "offline").mkdir(parents=True)
    header = "step,name,value,wall_s\n"
    (run / "offline" / "metrics.csv").write_text(header)
    assert run_progress(run, suite) == 0.0  # a header only
    (run / "offline" / "metrics.csv").write_text(header + "3,train/loss,1.0,0.1\n")
    assert run_progress(run, suite) == pytest.approx(0.25)
    (run / "offline" / "checkpoints").mkdir()
    (run / "offline" / "checkpoints" / "last").write_text("step_000000006")
    (run / "online").mkdir()
    (run / "online" / "metrics.csv").write_text(header + "45,eval/success_rate,0.5,1.0\n")
    assert run_progress(run, suite) == pytest.approx(0.5 + 0.5 * 45 / 60)


def test_tables_give_mean_and_std_over_seeds():
    runs = [
        {
            "task": "reach",
            "algo": "iql",
            "offline_score": 10.0,
            "online_score": 30.0,
            "regret": 0.5,
        },
        {
            "task": "reach",
            "algo": "iql",
            "offline_score": 30.0,
            "online_score": 50.0,
            "regret": 0.7,
        },
        {"task": "push", "algo": "iql", "offline_score": 0.0, "online_score": 10.0, "regret": 1.0},
    ]
    table = summarize(runs)
    assert table[("reach", "iql")]["offline_score"] == (20.0, 10.0)
    assert table[("reach", "iql")]["seeds"] == 2
    text = markdown_tables(runs, ["iql", "cql"])
    assert "| reach | 20.0 ± 10.0 → 40.0 ± 10.0 | n/a |" in text
    assert "| reach | 0.60 ± 0.10 | n/a |" in text
    assert "| **average** | 10.0 → 25.0 | nan → nan |" in text  # mean over tasks


def test_ray_runner_skips_finished_runs(tmp_path):
    suite = suite_from_dict(TINY)
    out = tmp_path / "bench"
    specs = grid(suite, ["iql", "calql"], 1)
    # an earlier, interrupted invocation finished run 0
    data = load_dataset(
        prepare_dataset(suite, suite.tasks[0], out / "datasets"), obs_keys=["state"]
    )
    record = execute_run(specs[0], suite, data, out / "runs" / specs[0].run_id)
    offline = out / "runs" / specs[0].run_id / "offline" / "checkpoints" / "last"
    stamp = offline.stat().st_mtime_ns
    again = execute_run(specs[0], suite, data, out / "runs" / specs[0].run_id)  # a rerun resumes
    assert offline.stat().st_mtime_ns == stamp  # the finished offline phase was not redone
    assert again["curve"] == record["curve"] and again["regret"] == record["regret"]
    twin = execute_run(specs[0], suite, data, tmp_path / "twin")  # same seed, fresh directory
    assert twin["curve"] == record["curve"] and twin["regret"] == record["regret"]
    weights = [
        load_file(latest_checkpoint(run / "online" / "checkpoints") / "model.safetensors")
        for run in (out / "runs" / specs[0].run_id, tmp_path / "twin")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # reproducible
    result_path(out, specs[0]).parent.mkdir(parents=True)
    result_path(out, specs[0]).write_text(json.dumps(record))
    finished_before = result_path(out, specs[0]).read_text()

    result = run_benchmark(suite, ["iql", "calql"], 1, out, workers=1, progress=False)

    assert result.executed == ["reach-calql-s0"] and not result.failed
    assert result_path(out, specs[0]).read_text() == finished_before  # skipped, not redone
    assert sorted(p.stem for p in (out / RESULTS).glob("*.json")) == sorted(s.run_id for s in specs)
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert {r["run_id"] for r in runs} == {s.run_id for s in specs}
    calql = next(r for r in runs if r["algo"] == "calql")
    assert calql["env_steps"] == 60 and [p[0] for p in calql["curve"]] == [0, 30, 60]
    assert calql["gradient_steps"] == 6 + 60
    assert 0.0 <= calql["regret"] <= 1.0
    report = (out / "report.md").read_text()
    assert "| reach |" in report and "curves.png" in report
    assert (out / "curves.png").stat().st_size > 1000

    again = run_benchmark(suite, ["iql", "calql"], 1, out, workers=1, progress=False)
    assert again.executed == [] and len(again.runs) == 2  # everything finished: nothing runs
    with pytest.raises(ValueError, match=r"\['offline_steps'\] differ"):
        run_benchmark(suite_from_dict({**TINY, "offline_steps": 7}), ["iql"], 1, out)


def test_cli_parses_the_bench_command():
    args = build_parser().parse_args(
        ["bench", "offline-to-online", "--suite", "small", "--algos", "iql,cql", "--seeds", "2",
         "--ray", "auto", "--out", "x", "--workers", "2"]
    )  # fmt: skip
    assert (args.suite, args.algos, args.seeds, args.ray, args.out, args.workers) == (
        "small", "iql,cql", 2, "auto", "x", 2
    )  # fmt: skip
