"""Load the stdlib `select` module before anything else can pick up bench/select.py.

Running any bench script as a file puts bench/ first on sys.path, where select.py (the name
the benchmark must have) would shadow the stdlib module that subprocess and socket import.
Import this module first in every bench script.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
try:
    import select  # noqa: F401  (the stdlib one; cached in sys.modules from now on)
finally:
    sys.path[:] = _saved
