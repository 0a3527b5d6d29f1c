"""embodied_rl.datasets (see DESIGN.md)."""
