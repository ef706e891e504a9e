"""Enhanced frames, labelled panels and per-scene videos of the test scenes (see sdsd.evaluation.qualitative).

    python qualitative_test.py -opt options/test/test_in_sdsd.yml
"""

import _sdsd_checkout  # noqa: F401 - first: puts this checkout's codes/ on sys.path (see _sdsd_checkout.py)
from sdsd.evaluation.qualitative import main

if __name__ == "__main__":
    main()
