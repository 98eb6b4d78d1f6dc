"""Scripts shipped to targets; `_jsonl` is also imported by the controller."""
