"""Human preference labels: a local web page over two rollout videos or two text responses.

:func:`prepare_session` rolls out a task's scripted expert at several noise levels (recording
frames), saves the rollouts as a dataset, cuts random segment pairs and writes one MP4 per
segment. :class:`LabelingServer` (stdlib ``http.server``, localhost only) shows the two videos
of a pair side by side with the instruction and buttons A / B / equal / skip (keys a, b, e,
s); every click is appended atomically to ``preferences.jsonl``, so Ctrl-C loses nothing and
a restarted server resumes at the first unlabelled pair. :func:`load_session_preferences`
turns the file into a :class:`~embodied_rl.preference.data.PreferenceDataset` for CPL or a
reward model. ``erl label`` runs both steps.

:func:`prepare_text_session` makes a session of text pairs (a prompt and two responses, e.g.
a language model's samples for RLHF); the page then shows the two texts, and
:func:`load_text_labels` returns the labelled records (``llm.pairs.text_pairs_from_labels``
turns them into reward-model pairs).

Several people can label one session at once: each page names its labeler (``?labeler=NAME``
in the address, or a random id the browser keeps), the server hands each labeler a pair no
one else holds (a lease of ``lease_s`` seconds, renewed when the same labeler asks again, so
a closed tab frees its pair), and a pair gets exactly one label: a second label of a pair,
or a label of a pair another labeler holds, is refused (HTTP 409) and written nowhere.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
import os
import re
import threading
import time
import urllib.parse
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
LEASE_S = 300.0  # how long a pair handed to one labeler stays theirs
_LABELER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class LabelConflict(ValueError):
    """A label for a pair that is labelled already or that another labeler holds."""


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
    if manifest.get("kind") == "text":
        raise ValueError(
            f"{session_dir} is a session of text pairs: read its labels with load_text_labels"
        )
    data = load_dataset(session_dir / manifest["dataset"], obs_keys=None)
    return preferences_from_records(data, read_preferences(labels))


def prepare_text_session(
    out: str | os.PathLike, comparisons: Sequence[dict[str, str]], title: str = "responses"
) -> Path:
    """Write a labeling session of text pairs: each comparison is ``{"prompt", "a", "b"}``
    (strings: the prompt and two responses; an optional ``"id"`` names the pair). The page
    shows the prompt and the two responses; ``title`` heads it."""
    if not comparisons:
        raise ValueError("a text session needs at least one comparison")
    pairs, ids = [], set()
    for i, c in enumerate(comparisons):
        missing = [k for k in ("prompt", "a", "b") if not isinstance(c.get(k), str)]
        if missing:
            raise ValueError(f"comparison {i} lacks the text fields {missing} (prompt, a, b)")
        pair_id = str(c.get("id") or f"pair{i:04d}")
        if pair_id in ids:
            raise ValueError(f"comparison {i} repeats the pair id {pair_id!r}")
        ids.add(pair_id)
        pairs.append({"id": pair_id, "prompt": c["prompt"], "a": {"text": c["a"]},
                      "b": {"text": c["b"]}})  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"kind": "text", "title": title, "pairs": pairs}
    write_text_atomic(out / SESSION_FILE, json.dumps(manifest, indent=1))
    logger.info("prepared %d text pairs in %s", len(pairs), out)
    return out


def load_text_labels(session_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The labelled records of a text session, in labeling order: ``prompt``, ``a``, ``b``
    (the texts), ``choice`` (``a``, ``b``, ``equal`` or ``skip``), ``labeler``, ``pair``."""
    session_dir = Path(session_dir)
    manifest = read_session(session_dir)
    if manifest.get("kind") != "text":
        raise ValueError(
            f"{session_dir} is a session of rollout videos: use load_session_preferences"
        )
    labels = session_dir / PREFERENCES_FILE
    return read_preferences(labels) if labels.is_file() else []


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
 .text {{ width: 420px; min-height: 120px; white-space: pre-wrap; font-size: 16px; }}
 .buttons {{ margin-top: 16px; display: flex; gap: 12px; }}
 button {{ font-size: 16px; padding: 10px 22px; border-radius: 6px; border: 0; cursor: pointer;
   background: #2d6cdf; color: #fff; }}
 button.neutral {{ background: #777; }}
 #status {{ margin-top: 12px; color: #555; }}
</style></head>
<body>
<h1><span id="question">Which is better?</span> <span id="progress"></span></h1>
<div id="instruction"></div>
<div class="pair">
 <div class="side"><h2>A</h2><video id="video-a" autoplay loop muted playsinline></video>
  <div id="text-a" class="text" style="display: none"></div></div>
 <div class="side"><h2>B</h2><video id="video-b" autoplay loop muted playsinline></video>
  <div id="text-b" class="text" style="display: none"></div></div>
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
const params = new URLSearchParams(location.search);
let labeler = params.get("labeler") || localStorage.getItem("labeler");
if (!labeler) {{
  labeler = "labeler-" + Math.random().toString(36).slice(2, 10);
  localStorage.setItem("labeler", labeler);
}}
async function next() {{
  const r = await fetch("/api/next?labeler=" + encodeURIComponent(labeler));
  const pair = await r.json();
  if (!r.ok) {{ document.getElementById("status").textContent = pair.error; return; }}
  current = pair.id || null;
  document.getElementById("progress").textContent = `(${{pair.labelled}} / ${{pair.total}} labelled)`;
  if (!current && pair.waiting) {{
    document.getElementById("instruction").textContent =
      `Other labelers hold the last ${{pair.waiting}} pairs; waiting for them...`;
    setTimeout(next, 5000);
    return;
  }}
  if (!current) {{
    document.getElementById("instruction").textContent = "All pairs are labelled. Thank you!";
    document.querySelectorAll("button").forEach(b => b.disabled = true);
    return;
  }}
  const text = pair.a.text !== undefined;
  document.getElementById("question").textContent =
    text ? "Which response is better?" : "Which robot behaviour is better?";
  document.getElementById("instruction").textContent =
    (text ? "Prompt: " : "Instruction: ") + pair.instruction;
  for (const side of ["a", "b"]) {{
    const video = document.getElementById("video-" + side);
    const box = document.getElementById("text-" + side);
    video.style.display = text ? "none" : "block";  // the CSS display beats the hidden attribute
    box.style.display = text ? "block" : "none";
    if (text) {{ box.textContent = pair[side].text; video.removeAttribute("src"); }}
    else video.src = "/" + pair[side].video;
  }}
}}
async function label(choice) {{
  if (!current) return;
  const r = await fetch("/api/label", {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{pair: current, choice: choice, labeler: labeler}})}});
  const answer = await r.json();
  document.getElementById("status").textContent = r.ok ? `saved: ${{current}} -> ${{choice}}` : answer.error;
  if (r.ok || r.status === 409) await next();
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
        lease_s: float = LEASE_S,
    ) -> None:
        self.session_dir = Path(session_dir).resolve()
        self.manifest = read_session(self.session_dir)
        self.pairs = {p["id"]: p for p in self.manifest["pairs"]}
        text = self.manifest.get("kind") == "text"
        self.videos = (
            set() if text else {p[s]["video"] for p in self.manifest["pairs"] for s in ("a", "b")}
        )
        self.labels_path = self.session_dir / PREFERENCES_FILE
        self.labeler = self._check_labeler(labeler)
        if lease_s < 0:
            raise ValueError(f"lease_s={lease_s} must be >= 0")
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._done = self.labelled()
        self._leases: dict[str, tuple[str, float]] = {}  # pair -> (labeler, expiry)
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

    def _check_labeler(self, labeler: str | None) -> str:
        if labeler is None:
            return self.labeler
        if not _LABELER_NAME.match(str(labeler)):
            raise ValueError(
                f"labeler={labeler!r}: use 1-64 letters, digits or the characters _ . @ -"
            )
        return str(labeler)

    def next_pair(self, labeler: str | None = None) -> dict[str, Any]:
        """The next pair for ``labeler`` (default: the server's), held for them for
        ``lease_s`` seconds: the pair they already hold, else the first unlabelled pair no
        other labeler holds. Without such a pair the answer has only the progress, with
        ``waiting`` (pairs other labelers hold) when some remain."""
        labeler = self._check_labeler(labeler)
        with self._lock:
            now = time.monotonic()
            self._leases = {p: held for p, held in self._leases.items() if held[1] > now}
            pending = [p for p in self.manifest["pairs"] if p["id"] not in self._done]
            progress = {"labelled": len(self.pairs) - len(pending), "total": len(self.pairs)}
            mine = [p for p in pending if self._leases.get(p["id"], ("",))[0] == labeler]
            free = [p for p in pending if p["id"] not in self._leases]
            if not mine and not free:
                return {**progress, "waiting": len(pending)} if pending else progress
            pair = (mine or free)[0]
            self._leases[pair["id"]] = (labeler, now + self.lease_s)
        instruction = pair.get("prompt", pair["a"].get("instruction", ""))
        return {**pair, "instruction": instruction, **progress}

    def record(self, pair_id: str, choice: str, labeler: str | None = None) -> dict[str, Any]:
        """Append ``labeler``'s label of a pair; ``ValueError`` names an unknown pair, choice
        or labeler name, :class:`LabelConflict` a pair labelled already or held by another
        labeler (nothing is written then)."""
        labeler = self._check_labeler(labeler)
        if pair_id not in self.pairs:
            raise ValueError(f"unknown pair {pair_id!r}")
        if choice not in CHOICES:
            raise ValueError(f"choice={choice!r}; choose one of {CHOICES}")
        pair = self.pairs[pair_id]
        if "prompt" in pair:  # a text pair: the record carries its texts
            sides = {"prompt": pair["prompt"], "a": pair["a"]["text"], "b": pair["b"]["text"]}
        else:
            sides = {side: {k: pair[side][k] for k in ("episode", "start", "length")}
                     for side in ("a", "b")}  # fmt: skip
        record = {
            "pair": pair_id,
            **sides,
            "choice": choice,
            "labeler": labeler,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        with self._lock:
            if pair_id in self._done:
                raise LabelConflict(f"pair {pair_id!r} is labelled already")
            holder, expiry = self._leases.get(pair_id, (labeler, 0.0))
            if holder != labeler and expiry > time.monotonic():
                raise LabelConflict(f"pair {pair_id!r} is being labelled by {holder!r}")
            append_preference(self.labels_path, record)
            self._done.add(pair_id)
            self._leases.pop(pair_id, None)
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
                name = server.manifest.get("title") or server.manifest.get("env_id", "")
                title = html.escape(f"{name}: {len(server.pairs)} pairs")
                self._send(HTTPStatus.OK, PAGE.format(title=title).encode(), "text/html")
            elif path == "/api/next":
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                try:
                    answer = server.next_pair(query.get("labeler", [None])[0])
                except ValueError as error:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
                    return
                self._json(HTTPStatus.OK, answer)
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
                labeler = body.get("labeler")
                record = server.record(
                    str(body.get("pair")), str(body.get("choice")),
                    None if labeler is None else str(labeler),
                )  # fmt: skip
            except LabelConflict as error:
                self._json(HTTPStatus.CONFLICT, {"error": str(error)})
                return
            except (ValueError, json.JSONDecodeError) as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
                return
            self._json(HTTPStatus.OK, record)

    return Handler
