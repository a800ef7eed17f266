"""scenario layer (see DESIGN.md)."""
