"""embodied_rl.evaluation (see DESIGN.md)."""
