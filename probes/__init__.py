"""Built-in probe kinds, one module per family; each registers its kinds on import."""
