"""Grid files and the sweep orchestrator (expand -> job graph -> executor -> collect)."""
