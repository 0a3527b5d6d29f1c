"""embodied-rl: multimodal embodied reinforcement learning."""

__version__ = "0.1.0"
