"""Runners: jobs built on top of every other package.

:mod:`embodied_rl.runners.pipeline` is the main job (collect -> BC -> IQL -> PPO fine-tuning ->
transfer -> report; ``erl pipeline``, ``make demo``); :mod:`embodied_rl.runners.benchmark`
runs offline-to-online grids on Ray (``erl bench``). They import the agents, the
environments and the evaluation; nothing below imports them, so ``embodied_rl.evaluation``
depends only on the environments and the policies.
"""
