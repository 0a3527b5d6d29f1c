"""embodied_rl.preference (see DESIGN.md)."""
