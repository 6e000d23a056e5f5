"""nn.Modules only: networks that stages train or apply (no I/O, no CLI, no store)."""
