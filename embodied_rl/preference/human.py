"""Human preference labels for robot behaviour: a local web page over two rollout videos.

:func:`prepare_session` rolls out a task's scripted expert at several noise levels (recording
frames), saves the rollouts as a dataset, cuts random segment pairs and writes one MP4 per
segment. :class:`LabelingServer` (stdlib ``http.server``, localhost only) shows the two videos
of a pair side by side with the instruction and buttons A / B / equal / skip (keys a, b, e,
s); every click is appended atomically to ``preferences.jsonl``, so Ctrl-C loses nothing and
a restarted server resumes at the first unlabelled pair. :func:`load_session_preferences`
turns the file into a :class:`~embodied_rl.preference.data.PreferenceDataset` for CPL or a
reward model. ``erl label`` runs both steps.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
import os
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from embodied_rl.datasets import OfflineDataset, load_dataset, save_dataset
from embodied_rl.datasets.collect_worker import record_episode
from embodied_rl.preference.data import (
    CHOICES,
    DEFAULT_SEGMENT_LENGTH,
    PreferenceDataset,
    append_preference,
    preferences_from_records,
    read_preferences,
)
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)

SESSION_FILE = "session.json"
PREFERENCES_FILE = "preferences.jsonl"
DATASET_ID = "labeling/rollouts-v0"


# ---------------------------------------------------------------------- session preparation
class _FrameRecorder(gym.Wrapper):
    """Keeps ``env.render()`` after the reset and after every step."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.frames: list[Any] = []

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self.frames = [self.env.render()]
        return out

    def step(self, action):
        out = self.env.step(action)
        self.frames.append(self.env.render())
        return out


def prepare_session(
    env_id: str,
    out: str | os.PathLike,
    *,
    scenes: int = 3,
    pairs: int = 10,
    length: int = DEFAULT_SEGMENT_LENGTH,
    noise_levels: Sequence[float] = (0.0, 0.5, 1.0),
    seed: int = 0,
    fps: int = 20,
    render_size: int = 256,
    env_kwargs: dict[str, Any] | None = None,
    policies: Sequence[str] | None = None,
) -> Path:
    """Roll out, save the dataset and the segment videos, and write ``session.json``.

    Every scene (``reset(seed=seed + scene)``: same layout, same instruction) is played once
    per behaviour: the expert at each of ``noise_levels``, or each of ``policies`` when given
    (specs of ``erl transfer --policy``: ``expert``, ``expert:noise=X``, ``random``, or a
    saved policy, checkpoint or run directory, whose observations the environment then
    gives). A pair shows two behaviours in one scene over the same steps, so the person
    compares behaviours, not tasks. Episodes never end early on success, so each lasts the
    task's horizon (which must be at least ``length`` steps)."""
    from embodied_rl.envs import make

    if scenes < 1 or pairs < 1:
        raise ValueError(f"scenes={scenes} and pairs={pairs} must be >= 1")
    if policies is None and (len(noise_levels) < 2 or min(noise_levels) < 0):
        raise ValueError(
            f"noise_levels={tuple(noise_levels)}: pairs need at least 2 non-negative levels"
        )
    behaviours = list(policies or [f"expert:noise={float(n):g}" for n in noise_levels])
    if len(behaviours) < 2:
        raise ValueError(f"policies={behaviours}: pairs need at least 2 behaviours to compare")
    out = Path(out)
    kwargs = {
        "terminate_on_success": False,
        **_policy_env_options(behaviours),
        **(env_kwargs or {}),
    }
    env = _FrameRecorder(make(env_id, render_mode="rgb_array", render_size=render_size, **kwargs))
    rollouts, frames = [], []
    try:
        for scene in range(scenes):
            for level, spec in enumerate(behaviours):
                policy = _behaviour(spec, env, seed + 1000 * level + scene)
                rollouts.append(record_episode(env, lambda task, p=policy: p, seed + scene))
                frames.append(env.frames)
    finally:
        env.close()
    metadata = {"embodied_rl": {"collection": {"env_id": env_id, "env_kwargs": kwargs}}}
    data = OfflineDataset.from_episodes(
        rollouts, env.observation_space, env.action_space, metadata=metadata
    )
    dataset_path = save_dataset(
        data, out / "dataset", DATASET_ID, metadata=metadata, overwrite=True
    )
    rng = np.random.default_rng(seed)
    n_levels = len(behaviours)
    manifest_pairs = []
    for p in range(pairs):
        scene = int(rng.integers(scenes))
        levels = rng.choice(n_levels, 2, replace=False)
        a, b = (scene * n_levels + int(level) for level in levels)
        horizon = int(min(data.episode_lengths[a], data.episode_lengths[b]))
        if horizon < length:
            raise ValueError(
                f"episodes last {horizon} steps, fewer than length={length}; lower the length"
            )
        start = int(rng.integers(horizon - length + 1))
        sides = [_clip(out, rollouts, frames, e, start, length, fps) for e in (a, b)]
        manifest_pairs.append({"id": f"pair{p:04d}", "a": sides[0], "b": sides[1]})
    manifest = {
        "env_id": env_id,
        "dataset": str(dataset_path.relative_to(out)),
        "length": length,
        "behaviours": behaviours,
        "pairs": manifest_pairs,
    }
    write_text_atomic(out / SESSION_FILE, json.dumps(manifest, indent=1))
    logger.info("prepared %d pairs in %s", pairs, out)
    return out


class _Acting:
    """A callable policy (``random``, ``module:factory``) with the ``act`` method rollouts use."""

    def __init__(self, fn) -> None:
        self.act = fn


def _behaviour(spec: str, env: gym.Env, seed: int) -> tuple[Any, str, float]:
    """``(policy, tier, noise)`` for one behaviour spec, as ``record_episode`` wants it."""
    from embodied_rl.evaluation.transfer import build_policy

    policy = build_policy(spec, env, seed)
    policy = policy if hasattr(policy, "act") else _Acting(policy)
    if spec == "expert" or spec.startswith("expert:noise="):
        return policy, "expert", float(spec.partition("=")[2] or 0.0)
    return policy, "policy", 0.0


def _policy_env_options(behaviours: Sequence[str]) -> dict[str, Any]:
    """The observations the saved policies among ``behaviours`` read (they must agree)."""
    from embodied_rl.policies import load_policy

    options: dict[str, Any] = {}
    for spec in behaviours:
        if not Path(spec).is_dir():
            continue
        own = load_policy(spec).env_options()
        clash = {k: (options[k], v) for k, v in own.items() if k in options and options[k] != v}
        if clash:
            raise ValueError(
                f"the saved policies need different observations {clash}; label policies "
                "that read the same observations in one session"
            )
        options.update(own)
    return options


def _clip(out: Path, rollouts, frames, episode: int, start: int, length: int, fps: int) -> dict:
    """Write the video of ``length`` steps of ``episode`` from ``start``; its manifest entry."""
    from embodied_rl.evaluation.video import caption_frame, write_video

    instruction = str(rollouts[episode].metadata.get("instruction") or "")
    name = f"videos/episode{episode:03d}_step{start:04d}_len{length}.mp4"
    if not (out / name).exists():
        clip = frames[episode][start : start + length + 1]
        write_video([caption_frame(f, instruction) for f in clip], out / name, fps=fps)
    return {
        "episode": episode,
        "start": start,
        "length": length,
        "video": name,
        "instruction": instruction,
    }


def read_session(session_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(session_dir) / SESSION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run prepare_session (or `erl label`) first")
    return json.loads(path.read_text())


def load_session_preferences(session_dir: str | os.PathLike) -> PreferenceDataset:
    """The session's labels over its rollout dataset (skips keep a NaN label)."""
    session_dir = Path(session_dir)
    manifest = read_session(session_dir)
    labels = session_dir / PREFERENCES_FILE
    if not labels.is_file():
        raise FileNotFoundError(
            f"{session_dir} holds no labels yet ({PREFERENCES_FILE} is missing): label pairs "
            f"first with `erl label --out {session_dir}`"
        )
    data = load_dataset(session_dir / manifest["dataset"], obs_keys=None)
    return preferences_from_records(data, read_preferences(labels))


# ---------------------------------------------------------------------- the web page
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preference labeling</title>
<style>
 body {{ font-family: sans-serif; background: #f4f4f6; margin: 24px; color: #222; }}
 h1 {{ font-size: 20px; margin: 0 0 4px; }}
 #instruction {{ font-size: 18px; margin: 8px 0 16px; }}
 .pair {{ display: flex; gap: 24px; }}
 .side {{ background: #fff; padding: 12px; border-radius: 8px; box-shadow: 0 1px 3px #0003; }}
 .side h2 {{ margin: 0 0 8px; font-size: 16px; }}
 video {{ width: 320px; height: 360px; background: #000; display: block; }}
 .buttons {{ margin-top: 16px; display: flex; gap: 12px; }}
 button {{ font-size: 16px; padding: 10px 22px; border-radius: 6px; border: 0; cursor: pointer;
   background: #2d6cdf; color: #fff; }}
 button.neutral {{ background: #777; }}
 #status {{ margin-top: 12px; color: #555; }}
</style></head>
<body>
<h1>Which robot behaviour is better? <span id="progress"></span></h1>
<div id="instruction"></div>
<div class="pair">
 <div class="side"><h2>A</h2><video id="video-a" autoplay loop muted playsinline></video></div>
 <div class="side"><h2>B</h2><video id="video-b" autoplay loop muted playsinline></video></div>
</div>
<div class="buttons">
 <button id="choose-a" data-choice="a">A is better (a)</button>
 <button id="choose-b" data-choice="b">B is better (b)</button>
 <button id="choose-equal" class="neutral" data-choice="equal">Equal (e)</button>
 <button id="choose-skip" class="neutral" data-choice="skip">Skip (s)</button>
</div>
<div id="status">{title}</div>
<script>
let current = null;
async function next() {{
  const r = await fetch("/api/next");
  const pair = await r.json();
  current = pair.id || null;
  document.getElementById("progress").textContent = `(${{pair.labelled}} / ${{pair.total}} labelled)`;
  if (!current) {{
    document.getElementById("instruction").textContent = "All pairs are labelled. Thank you!";
    document.querySelectorAll("button").forEach(b => b.disabled = true);
    return;
  }}
  document.getElementById("instruction").textContent = "Instruction: " + pair.instruction;
  document.getElementById("video-a").src = "/" + pair.a.video;
  document.getElementById("video-b").src = "/" + pair.b.video;
}}
async function label(choice) {{
  if (!current) return;
  const r = await fetch("/api/label", {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{pair: current, choice: choice}})}});
  const answer = await r.json();
  document.getElementById("status").textContent = r.ok ? `saved: ${{current}} -> ${{choice}}` : answer.error;
  if (r.ok) await next();
}}
document.querySelectorAll("button").forEach(b => b.addEventListener("click", () => label(b.dataset.choice)));
document.addEventListener("keydown", e => {{
  const keys = {{a: "a", b: "b", e: "equal", s: "skip"}};
  if (keys[e.key]) label(keys[e.key]);
}});
next();
</script>
</body></html>
"""


class LabelingServer:
    """Serves a prepared session on ``host:port`` (port 0: any free port) until shut down."""

    def __init__(
        self,
        session_dir: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        labeler: str = "human",
    ) -> None:
        self.session_dir = Path(session_dir).resolve()
        self.manifest = read_session(self.session_dir)
        self.pairs = {p["id"]: p for p in self.manifest["pairs"]}
        self.videos = {p[side]["video"] for p in self.manifest["pairs"] for side in ("a", "b")}
        self.labels_path = self.session_dir / PREFERENCES_FILE
        self.labeler = labeler
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def labelled(self) -> set[str]:
        if not self.labels_path.exists():
            return set()
        return {r.get("pair") for r in read_preferences(self.labels_path)}

    def next_pair(self) -> dict[str, Any]:
        done = self.labelled()
        pending = [p for p in self.manifest["pairs"] if p["id"] not in done]
        progress = {"labelled": len(self.pairs) - len(pending), "total": len(self.pairs)}
        if not pending:
            return progress
        pair = pending[0]
        return {**pair, "instruction": pair["a"]["instruction"], **progress}

    def record(self, pair_id: str, choice: str) -> dict[str, Any]:
        """Append one label; ``ValueError`` names an unknown pair or choice."""
        if pair_id not in self.pairs:
            raise ValueError(f"unknown pair {pair_id!r}")
        if choice not in CHOICES:
            raise ValueError(f"choice={choice!r}; choose one of {CHOICES}")
        pair = self.pairs[pair_id]
        record = {
            "pair": pair_id,
            "a": {k: pair["a"][k] for k in ("episode", "start", "length")},
            "b": {k: pair["b"][k] for k in ("episode", "start", "length")},
            "choice": choice,
            "labeler": self.labeler,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        with self._lock:
            append_preference(self.labels_path, record)
        return record

    def start(self) -> LabelingServer:
        """Serve from a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join()


def _handler_for(server: LabelingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/":
                title = html.escape(f"{server.manifest['env_id']}: {len(server.pairs)} pairs")
                self._send(HTTPStatus.OK, PAGE.format(title=title).encode(), "text/html")
            elif path == "/api/next":
                self._json(HTTPStatus.OK, server.next_pair())
            elif path.lstrip("/") in server.videos:
                video = (server.session_dir / path.lstrip("/")).resolve()
                if server.session_dir not in video.parents or not video.is_file():
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no video {path}"})
                else:
                    self._send(HTTPStatus.OK, video.read_bytes(), "video/mp4")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {path}"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/api/label":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
                return
            try:
                size = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(size) or b"{}")
                record = server.record(str(body.get("pair")), str(body.get("choice")))
            except (ValueError, json.JSONDecodeError) as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
                return
            self._json(HTTPStatus.OK, record)

    return Handler
