from mtnlp import require_import_name

require_import_name(__name__, "mtnlp.components")  # one import path: see mtnlp/__init__.py
