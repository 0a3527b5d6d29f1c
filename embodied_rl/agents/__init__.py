"""embodied_rl.agents (see DESIGN.md)."""
