"""An environment that raises inside a worker process (collection, transfer evaluation,
asynchronous vector env) surfaces the worker's traceback at once; a worker killed outright
is reported, never waited on. Every test has a timeout: a hang fails it."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from crashing_policies import NAN_ACTION, NaNFromEpisode, nan_policy

from embodied_rl.agents.ppo_rollout import EnvWorkerError, make_vec_env
from embodied_rl.datasets import CollectionError, collect, load_dataset
from embodied_rl.evaluation.transfer import TransferWorkerError, parse_domain, run_domains

ENV = "tabletop/reach-v0"


@pytest.mark.timeout(120)
def test_env_step_raising_in_a_collection_worker(tmp_path):
    with pytest.raises(CollectionError) as error:
        collect(
            ENV, NaNFromEpisode(at=2), episodes=4, workers=2, out=tmp_path,
            dataset_id="faults/nan-v0", env_kwargs={"horizon": 10}, reference_episodes=0,
            progress=False,
        )  # fmt: skip
    message = str(error.value)
    assert "ValueError: action contains NaN or inf" in message
    assert "Traceback" in message and 'tabletop/base.py", line' in message  # the env's frame
    data = load_dataset("faults/nan-v0", tmp_path)
    assert [m["seed"] for m in data.episode_metadata] == [0, 1]  # completed episodes kept


@pytest.mark.timeout(120)
def test_env_step_raising_in_a_transfer_worker():
    domains = [parse_domain("nominal", ENV), parse_domain("light", ENV)]
    with pytest.raises(TransferWorkerError) as error:
        run_domains(
            nan_policy, domains, episodes=4, workers=2, env_kwargs={"horizon": 10}, progress=False
        )
    message = str(error.value)
    assert "failed in a worker" in message and "action contains NaN or inf" in message
    assert "Traceback" in message and 'tabletop/base.py", line' in message


@pytest.mark.timeout(60)
def test_async_vector_env_worker_raising_or_killed():
    envs = make_vec_env(ENV, 2, "async", horizon=10)
    envs.reset(seed=0)
    with pytest.raises(EnvWorkerError, match=r"(?s)worker \d raised ValueError.*Traceback.*NaN"):
        envs.step(np.stack([np.zeros(4, np.float32), NAN_ACTION]))
    envs.close()

    envs = make_vec_env(ENV, 2, "async", horizon=10)
    envs.reset(seed=0)
    os.kill(envs.processes[1].pid, signal.SIGKILL)
    envs.processes[1].join(timeout=10)
    with pytest.raises(EnvWorkerError, match=r"died abruptly \(worker 1 exit code -9\)"):
        envs.step(np.zeros((2, 4), np.float32))
    envs.close()  # gymnasium 1.4 alone hangs here forever
