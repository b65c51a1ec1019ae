"""Studies run on the project's own model code: ``mtnlp experiment ...``."""

from mtnlp import require_import_name

require_import_name(__name__, "mtnlp.experiments")  # one import path: see mtnlp/__init__.py
