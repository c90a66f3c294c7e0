"""Repository tools (not shipped in the package)."""
