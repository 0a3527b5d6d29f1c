"""embodied_rl.utils (see DESIGN.md)."""
