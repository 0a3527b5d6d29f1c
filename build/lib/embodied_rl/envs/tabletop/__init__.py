"""Language-conditioned tabletop manipulation suite (MuJoCo backend)."""
