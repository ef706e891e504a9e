"""Lets the root scripts (``train.py``, ``quantitative_test.py``, ``qualitative_test.py``) run from a checkout.

``python train.py`` puts the folder of the script, the repository root, first on ``sys.path``, so this module and
the ``dcn`` package are found; the ``sdsd`` package lives in ``codes/``, which is not on the path until this
module puts it there. Importing it (the first import of each root script) puts ``<repo>/codes`` and ``<repo>``
first on ``sys.path``, so the scripts use the code of the checkout they are in, whether or not a copy is
installed (``pip install -e .`` or otherwise).

It cannot live inside ``sdsd``: ``sdsd`` is exactly what is not importable yet.
"""

import os
import sys

REPO = os.path.dirname(os.path.abspath(__file__))


def use_this_checkout() -> None:
    """Put ``<repo>/codes`` (package ``sdsd``) and ``<repo>`` (package ``dcn``) first on ``sys.path``."""
    wanted = [os.path.join(REPO, "codes"), REPO]
    sys.path[:] = wanted + [p for p in sys.path if os.path.abspath(p or os.curdir) not in wanted]


use_this_checkout()
