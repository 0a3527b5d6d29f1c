import numpy as np
import pytest

from embodied_rl.envs import make, make_expert
from embodied_rl.evaluation.rollout import format_markdown, run_episodes, success_table
from embodied_rl.evaluation.video import CAPTION_HEIGHT, caption_frame, write_video


def test_rollouts_record_frames_and_summarise_success():
    env = make("tabletop/pick-v0", render_mode="rgb_array", render_size=64, seed=0)
    results = run_episodes(env, make_expert(env), n_episodes=3, record=1, progress=False)
    assert [r.seed for r in results] == [0, 1, 2]
    assert len(results[0].frames) == results[0].length + 1 and not results[1].frames
    assert results[0].frames[0].shape == (64, 64, 3)
    rows = {row["task"]: row for row in success_table(results)}
    assert rows["all"]["episodes"] == 3
    assert rows["pick"]["success_rate"] == pytest.approx(np.mean([r.success for r in results]))
    assert "| pick | seen | 3 |" in format_markdown(list(rows.values()))
    env.close()


def test_random_policy_rarely_succeeds_where_the_expert_does():
    env = make("tabletop/stack-v0", seed=0)
    random_results = run_episodes(env, lambda obs: env.action_space.sample(), 5, progress=False)
    expert_results = run_episodes(env, make_expert(env), 5, progress=False)
    assert sum(r.success for r in random_results) < sum(r.success for r in expert_results)


def test_video_round_trip(tmp_path):
    import imageio.v2 as imageio

    frames = [
        caption_frame(np.full((48, 64, 3), 10 * i, np.uint8), "reach the red block", "success")
        for i in range(12)
    ]
    assert frames[0].shape == (48 + CAPTION_HEIGHT, 64, 3)
    write_video(frames, tmp_path / "clip.mp4", fps=10)
    # list(reader) would trust its length hint, which is inf for ffmpeg streams
    read = [frame for frame in imageio.get_reader(tmp_path / "clip.mp4", format="FFMPEG")]
    assert len(read) == 12 and read[0].shape == frames[0].shape
    assert abs(float(read[5][:48].mean()) - 50) < 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "empty.mp4")
