"""embodied_rl.policies (see DESIGN.md)."""
