"""planning layer (see DESIGN.md)."""
