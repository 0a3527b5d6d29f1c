"""Contrastive Preference Learning as a registered agent (``"cpl"``).

The learner lives in :mod:`embodied_rl.preference.cpl` (the preference package does not import
the agents); registering it here lets the shared pieces treat it like the others:
``train("cpl", data, out, preferences=prefs)``, ``erl train --algo cpl --preferences ...``,
``load_agent`` on its checkpoints. Its batches are labelled segment pairs
(:class:`~embodied_rl.preference.data.PreferenceSampler`), not transitions.
"""

from embodied_rl.agents.base import register_agent
from embodied_rl.preference.cpl import CPLConfig, CPLLearner

register_agent("cpl")(CPLLearner)

__all__ = ["CPLConfig", "CPLLearner"]
