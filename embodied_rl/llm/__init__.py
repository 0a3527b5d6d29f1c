"""embodied_rl.llm (see DESIGN.md)."""
