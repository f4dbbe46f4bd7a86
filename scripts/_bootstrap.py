"""Makes ``import machina`` work for the scripts in this directory, the way ``bin/_launch`` does for bin/.

From a source checkout, a script re-executes itself with the checkout's virtual environment (``make setup``)
when it exists, else puts the checkout on ``sys.path``.  Installed (``make install`` puts the scripts in
``$PREFIX/libexec/machina``) there is no checkout around it and the installed package is used.
"""

from __future__ import annotations

import os
import sys

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def _in_checkout() -> bool:
    return os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")) and os.path.isdir(
        os.path.join(_CHECKOUT, "machina")
    )


if _in_checkout():
    _venv = os.path.join(_CHECKOUT, ".venv")
    _python = os.path.join(_venv, "bin", "python3")
    if os.access(_python, os.X_OK) and os.path.realpath(sys.prefix) != os.path.realpath(_venv):
        _argv = [_python, os.path.realpath(sys.argv[0]), *sys.argv[1:]]
        os.execv(_python, _argv)  # noqa: S606  (argv, no shell: this same script under the venv's python)
    sys.path.insert(0, _CHECKOUT)
