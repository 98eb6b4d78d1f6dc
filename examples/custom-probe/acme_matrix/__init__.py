"""Acme's probe kinds for matrix; `acme_matrix.probes` registers them (see pyproject.toml)."""
