"""The spec: pydantic models (the single source of the schema), YAML with positions, includes
and vars, the template sandbox, the matcher language, and problems at file:line."""
