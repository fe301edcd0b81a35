"""First import of every model.py: this model version's bundled code, then PYTHONPATH, first on sys.path.

``whisper-triton build`` copies this file and the ``whisper_triton`` package next to each model.py, so a
model repository runs wherever it is moved: it names no path of the machine that built it. Triton's
Python stub puts the version folder on ``sys.path`` (after the system's site directories) and runs its
interpreter isolated, ignoring ``PYTHONPATH``. This module puts the bundled code first, so the model runs
the code it was built and verified with even where another whisper-triton is installed, and applies
``PYTHONPATH``, so a server's Python environment can be given the usual way (the local CPU launcher sets
it to its virtual environment; NVIDIA's container needs none: `pip install -r requirements.txt` there).
"""

import os
import pathlib
import sys

sys.dont_write_bytecode = True  # leave the repository as it was built (it may be read-only, or checksummed)
_FIRST = [str(pathlib.Path(__file__).resolve().parent)]
_FIRST += [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
sys.path[:0] = [path for path in _FIRST if path not in sys.path[: len(_FIRST)]]
