"""The human labeling loop: session preparation, the HTTP API, `erl label`, and the page in
headless Chromium."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from embodied_rl.cli import main
from embodied_rl.preference.human import (
    PREFERENCES_FILE,
    SESSION_FILE,
    LabelingServer,
    load_session_preferences,
    prepare_session,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Two reach scenes x three noise levels, four pairs of 12-step segments."""
    out = tmp_path_factory.mktemp("session")
    return prepare_session(
        "tabletop/reach-v0", out, scenes=2, pairs=4, length=12, render_size=96, seed=0
    )


@pytest.fixture
def session(prepared, tmp_path) -> Path:
    """A fresh copy of the prepared session (each test labels its own)."""
    copy = tmp_path / "session"
    shutil.copytree(prepared, copy)
    return copy


@pytest.fixture
def server(session):
    server = LabelingServer(session).start()
    yield server
    server.shutdown()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_session_pairs_compare_one_scene_over_the_same_steps(prepared):
    manifest = json.loads((prepared / SESSION_FILE).read_text())
    assert len(manifest["pairs"]) == 4
    for pair in manifest["pairs"]:
        a, b = pair["a"], pair["b"]
        assert a["episode"] // 3 == b["episode"] // 3  # same scene: 3 noise levels per scene
        assert a["episode"] != b["episode"] and a["start"] == b["start"]
        assert a["instruction"] == b["instruction"] and a["instruction"]
        for side in (a, b):
            assert (prepared / side["video"]).stat().st_size > 1_000  # an encoded mp4


def test_api_records_labels_and_resumes(server, session):
    status, first = _get(server.url + "api/next")
    first = json.loads(first)
    assert status == 200 and first["labelled"] == 0 and first["total"] == 4
    status, record = _post(server.url + "api/label", {"pair": first["id"], "choice": "b"})
    assert status == 200 and record["choice"] == "b"
    lines = (session / PREFERENCES_FILE).read_text().splitlines()
    assert json.loads(lines[0])["pair"] == first["id"]
    # a restarted server continues at the next unlabelled pair
    again = LabelingServer(session)
    assert again.next_pair()["id"] != first["id"] and again.next_pair()["labelled"] == 1
    again.httpd.server_close()
    prefs = load_session_preferences(session)
    assert prefs.labels.tolist() == [0.0]
    start = prefs.segments.starts[prefs.second[0]]
    assert prefs.segments.data.episode_index[start] == first["b"]["episode"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"pair": "pair9999", "choice": "a"}, "unknown pair 'pair9999'"),
        ({"pair": "pair0000", "choice": "c"}, "choice='c'"),
    ],
)
def test_api_rejects_bad_labels(server, session, body, error):
    status, answer = _post(server.url + "api/label", body)
    assert status == 400 and error in answer["error"]
    assert not (session / PREFERENCES_FILE).exists()


def test_only_session_videos_are_served(server, session):
    video = json.loads((session / SESSION_FILE).read_text())["pairs"][0]["a"]["video"]
    status, body = _get(server.url + video)
    assert status == 200 and body == (session / video).read_bytes()
    for path in ("session.json", "../session/session.json", "videos/%2e%2e/session.json"):
        assert _get(server.url + path)[0] == 404


def test_erl_label_prepares_a_session(tmp_path, capsys):
    out = tmp_path / "labels"
    code = main(
        ["label", "--task", "tabletop/reach-v0", "--out", str(out), "--scenes", "1",
         "--pairs", "2", "--length", "8", "--prepare-only"]
    )  # fmt: skip
    assert code == 0 and (out / SESSION_FILE).is_file()
    assert "prepared 2 pairs" in capsys.readouterr().out
    assert main(["label", "--out", str(tmp_path / "none"), "--prepare-only"]) == 2
    assert "pass --task" in capsys.readouterr().err


def test_page_in_headless_chromium(server, session, tmp_path, chromium):
    from PIL import Image

    page = chromium.new_page()
    page.goto(server.url)
    page.wait_for_selector("#instruction:has-text('Instruction:')")
    assert page.inner_text("#progress") == "(0 / 4 labelled)"
    page.wait_for_function("document.getElementById('video-a').readyState >= 2")
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    page.click("#choose-a")
    page.wait_for_selector("#progress:has-text('(1 / 4 labelled)')")
    page.keyboard.press("e")
    page.wait_for_selector("#progress:has-text('(2 / 4 labelled)')")
    records = [json.loads(x) for x in (session / PREFERENCES_FILE).read_text().splitlines()]
    assert [r["choice"] for r in records] == ["a", "equal"]
    assert records[0]["pair"] != records[1]["pair"]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # not blank: text, buttons and video frames
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200


def test_erl_label_compares_saved_policies_and_erl_train_cpl_learns_from_the_labels(
    tmp_path, capsys
):
    """erl label --policies: a saved policy against the expert; the labels train CPL through
    erl train (the session brings its rollouts), and a checkpoint rebuilds as a CPL agent."""
    from embodied_rl.agents import CPLLearner, load_agent
    from embodied_rl.envs import make
    from embodied_rl.policies import MLPConfig, MLPPolicy

    env = make("tabletop/reach-v0")
    space = env.action_space
    config = MLPConfig(
        obs_dim=env.observation_space["state"].shape[0], hidden=(16,),
        action_low=tuple(map(float, space.low)), action_high=tuple(map(float, space.high)),
    )  # fmt: skip
    env.close()
    MLPPolicy(config).save(tmp_path / "mine")
    out = tmp_path / "labels"
    code = main(
        ["label", "--task", "tabletop/reach-v0", "--out", str(out), "--scenes", "1",
         "--pairs", "3", "--length", "8", "--policies", str(tmp_path / "mine"), "expert",
         "--prepare-only"]
    )  # fmt: skip
    assert code == 0
    manifest = json.loads((out / SESSION_FILE).read_text())
    assert manifest["behaviours"] == [str(tmp_path / "mine"), "expert"]
    labeler = LabelingServer(out, port=0)
    try:
        for pair in manifest["pairs"]:  # the expert's clip (episode 1) is better
            labeler.record(pair["id"], "a" if pair["a"]["episode"] == 1 else "b")
    finally:
        labeler.httpd.server_close()
    prefs = load_session_preferences(out)
    assert len(prefs) == 3 and prefs.segments.data.episode_metadata[0]["tier"] == "policy"

    run = tmp_path / "cpl"
    train = ["train", "--algo", "cpl", "--preferences", str(out), "--steps", "4", "--batch-size",
             "2", "--eval-episodes", "0", "--checkpoint-every", "2", "--out", str(run)]  # fmt: skip
    assert main(train) == 0, capsys.readouterr().err
    assert (run / "policy" / "model.safetensors").is_file()
    agent = load_agent(run / "checkpoints")
    assert isinstance(agent, CPLLearner) and agent.step == 4
    assert "train/cpl_loss" in (run / "metrics.csv").read_text()

    # the scripted teacher on a dataset; and the errors that name a missing or misplaced flag
    data = str(out / manifest["dataset"])
    scripted = ["train", "--algo", "cpl", "--dataset", data, "--preferences",
                "scripted:pairs=6,segments=4,length=8", "--steps", "2", "--batch-size", "2",
                "--eval-episodes", "0", "--out", str(tmp_path / "scripted")]  # fmt: skip
    assert main(scripted) == 0, capsys.readouterr().err
    assert main(["train", "--algo", "cpl", "--dataset", data, "--out", str(run)]) == 2
    assert "cpl learns from preferences: add --preferences" in capsys.readouterr().err
    assert main(["train", "--algo", "bc", "--dataset", data, "--preferences", "scripted"]) == 2
    assert "--preferences applies to agents that learn from them" in capsys.readouterr().err
    bad = ["train", "--algo", "cpl", "--dataset", data, "--preferences", "scripted:pairz=3"]
    assert main(bad) == 2
    assert "'pairz=3' is not KEY=VALUE" in capsys.readouterr().err


def test_a_session_without_labels_says_how_to_get_them(prepared, tmp_path):
    copy = tmp_path / "unlabelled"
    shutil.copytree(prepared, copy)
    (copy / PREFERENCES_FILE).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="holds no labels yet.*erl label --out"):
        load_session_preferences(copy)
