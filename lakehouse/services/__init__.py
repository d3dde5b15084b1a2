"""Local services the project starts and stops itself (the embedded default; production points at real ones)."""
