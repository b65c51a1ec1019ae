"""Studies run on the project's own model code: ``mtnlp experiment ...``."""
