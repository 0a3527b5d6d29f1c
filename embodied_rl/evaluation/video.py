"""Rollout videos: caption frames with the instruction and write MP4 (or GIF) atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from embodied_rl.utils.io import atomic_path

CAPTION_HEIGHT = 40  # pixels: two lines of PIL's default font


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Cut ``text`` with an ellipsis so it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def caption_frame(frame: np.ndarray, text: str, status: str = "") -> np.ndarray:
    """Return ``frame`` (H, W, 3) with a caption bar below it: ``text``, then ``status``."""
    h, w, _ = frame.shape
    canvas = Image.new("RGB", (w, h + CAPTION_HEIGHT), (20, 20, 24))
    canvas.paste(Image.fromarray(frame), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((6, h + 5), _fit(draw, text, font, w - 12), fill=(235, 235, 235), font=font)
    if status:
        colour = (90, 220, 120) if status == "success" else (240, 200, 80)
        draw.text((6, h + 22), status, fill=colour, font=font)
    return np.asarray(canvas)


def write_video(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 25) -> None:
    """Write uint8 ``(H, W, 3)`` frames to ``path`` (``.mp4`` via ffmpeg, or ``.gif``)."""
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise ValueError("no frames to write")
    with atomic_path(path) as tmp:
        if str(path).endswith(".gif"):
            imageio.mimsave(tmp, list(frames), duration=1.0 / fps, loop=0)
        else:
            # Even sides keep H.264 encoders happy; macro_block_size=1 stops imageio resizing.
            frames = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
            with imageio.get_writer(
                tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7, macro_block_size=1
            ) as writer:
                for frame in frames:
                    writer.append_data(frame)


def rollout_video(
    env, policy, episodes: int, seed: int, path: str | os.PathLike, fps: int = 12
) -> list[bool]:
    """Play ``episodes`` episodes of ``policy`` in ``env`` (made with ``render_mode=
    "rgb_array"``) from reset seeds ``seed, seed + 1, ...`` and write them, captioned with the
    instruction and the outcome, to one GIF or MP4 at ``path``; returns the successes."""
    from embodied_rl.evaluation.rollout import run_episodes

    results = run_episodes(env, policy, episodes, seed=seed, record=episodes, progress=False)
    frames: list[np.ndarray] = []
    for episode in results:
        status = "success" if episode.success else "failure"
        captioned = [caption_frame(f, episode.instruction, status) for f in episode.frames]
        frames += captioned[::2] + [captioned[-1]] * 6  # every 2nd frame; hold the end
    write_video(frames, path, fps=fps)
    return [episode.success for episode in results]
