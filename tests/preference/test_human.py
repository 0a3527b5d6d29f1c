"""The human labeling loop: session preparation, the HTTP API, `erl label`, and the page in
headless Chromium."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from embodied_rl.cli import main
from embodied_rl.preference.human import (
    PREFERENCES_FILE,
    SESSION_FILE,
    LabelConflict,
    LabelingServer,
    load_session_preferences,
    load_text_labels,
    prepare_session,
    prepare_text_session,
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
    lines = tmp_path / "responses.jsonl"
    lines.write_text('{"prompt": "p", "a": "x", "b": "y"}\n{"prompt": "q", "a": "z", "b": "w"}\n')
    text_out = tmp_path / "text"
    assert main(["label", "--text", str(lines), "--out", str(text_out), "--prepare-only"]) == 0
    assert "prepared 2 text pairs" in capsys.readouterr().out
    assert json.loads((text_out / SESSION_FILE).read_text())["kind"] == "text"
    assert main(["label", "--text", str(lines), "--out", str(text_out), "--prepare-only"]) == 2
    assert "holds a labeling session already" in capsys.readouterr().err


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


def _text_session(out: Path, n: int) -> Path:
    comparisons = [
        {"prompt": f"review {i}:", "a": f"great {i}", "b": f"awful {i}"} for i in range(n)
    ]
    return prepare_text_session(out, comparisons, title="sentiment")


def test_concurrent_labelers_each_label_distinct_pairs_and_lose_none(tmp_path):
    """Six clients label a 60-pair session over HTTP at once: every pair gets exactly one
    label, from the client the server handed it to; no request conflicts, none is lost."""
    session = _text_session(tmp_path / "text", 60)
    server = LabelingServer(session).start()
    labelled: dict[str, list[str]] = {f"client{k}": [] for k in range(6)}
    errors: list[str] = []

    def client(name: str) -> None:
        while True:
            status, body = _get(f"{server.url}api/next?labeler={name}")
            pair = json.loads(body)
            if status != 200:
                errors.append(pair["error"])
                return
            if "id" not in pair:
                if pair.get("waiting"):
                    continue  # another client holds the last pairs: ask again
                return
            status, answer = _post(server.url + "api/label",
                                   {"pair": pair["id"], "choice": "a", "labeler": name})  # fmt: skip
            if status != 200:
                errors.append(answer["error"])
            labelled[name].append(pair["id"])

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in labelled]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.shutdown()
    assert not errors
    records = load_text_labels(session)
    ids = [r["pair"] for r in records]
    assert len(ids) == 60 and len(set(ids)) == 60  # none lost, none duplicated
    assert sum(len(v) for v in labelled.values()) == 60
    assert sum(bool(v) for v in labelled.values()) >= 2  # the work was shared
    by_pair = {r["pair"]: r["labeler"] for r in records}
    assert all(by_pair[i] == name for name, got in labelled.items() for i in got)
    assert all(r["prompt"].startswith("review") and r["a"].startswith("great") for r in records)


def test_a_pair_gets_one_label_and_a_held_pair_is_refused(tmp_path):
    session = _text_session(tmp_path / "text", 3)
    server = LabelingServer(session, lease_s=60)
    first = server.next_pair("ann")
    assert server.next_pair("ann")["id"] == first["id"]  # a reloaded page: the same pair
    other = server.next_pair("bob")
    assert other["id"] != first["id"]
    with pytest.raises(LabelConflict, match="being labelled by 'ann'"):
        server.record(first["id"], "b", "bob")
    server.record(first["id"], "a", "ann")
    with pytest.raises(LabelConflict, match="labelled already"):
        server.record(first["id"], "b", "ann")
    assert server.next_pair("cid")["id"] not in (first["id"], other["id"])
    assert server.next_pair("dan") == {"labelled": 1, "total": 3, "waiting": 2}
    with pytest.raises(ValueError, match="labeler="):
        server.next_pair("no spaces please")
    server.httpd.server_close()
    assert [r["pair"] for r in load_text_labels(session)] == [first["id"]]
    # an expired lease frees the pair for others; a restarted server keeps the labels
    again = LabelingServer(session, lease_s=0.0)
    held = again.next_pair("ann")["id"]
    assert again.next_pair("bob")["id"] == held and again.next_pair("bob")["labelled"] == 1
    again.httpd.server_close()


def test_text_labels_become_reward_model_pairs_and_the_api_says_409(tmp_path):
    from embodied_rl.llm.pairs import TextPair, text_pairs_from_labels

    session = _text_session(tmp_path / "text", 3)
    server = LabelingServer(session).start()
    try:
        choices = iter(["b", "a", "equal"])
        for _ in range(3):
            pair = json.loads(_get(server.url + "api/next?labeler=ann")[1])
            assert pair["instruction"] == pair["prompt"] and "text" in pair["a"]
            status, _ = _post(server.url + "api/label",
                              {"pair": pair["id"], "choice": next(choices), "labeler": "ann"})  # fmt: skip
            assert status == 200
        status, answer = _post(server.url + "api/label", {"pair": "pair0000", "choice": "a"})
        assert status == 409 and "labelled already" in answer["error"]
        assert _get(server.url + "api/next?labeler=a%20b")[0] == 400
    finally:
        server.shutdown()
    pairs = text_pairs_from_labels(load_text_labels(session))
    assert pairs == [TextPair("review 0:", "awful 0", "great 0"),
                     TextPair("review 1:", "great 1", "awful 1")]  # fmt: skip
    with pytest.raises(ValueError, match="text pairs"):
        load_session_preferences(session)
    with pytest.raises(ValueError, match="lacks the text fields"):
        prepare_text_session(tmp_path / "bad", [{"prompt": "p", "a": "x"}])


def test_text_page_in_headless_chromium(tmp_path, chromium):
    session = _text_session(tmp_path / "text", 2)
    server = LabelingServer(session).start()
    try:
        page = chromium.new_page()
        page.goto(server.url + "?labeler=carol")
        page.wait_for_selector("#instruction:has-text('Prompt: review 0:')")
        assert page.inner_text("#text-a") == "great 0" and page.is_hidden("#video-a")
        assert page.inner_text("#question") == "Which response is better?"
        page.click("#choose-b")
        page.wait_for_selector("#progress:has-text('(1 / 2 labelled)')")
    finally:
        server.shutdown()
    (record,) = load_text_labels(session)
    assert record["choice"] == "b" and record["labeler"] == "carol"
