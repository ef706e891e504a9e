"""Enhanced frames, labelled panels and per-scene videos of the test scenes (see sdsd.evaluation.qualitative).

    python qualitative_test.py -opt options/test/test_in_sdsd.yml
"""

import _sdsd_checkout  # noqa: F401 - first: puts this checkout's codes/ on sys.path (see _sdsd_checkout.py)
from sdsd.evaluation.common import qualitative_parser

if __name__ == "__main__":
    qualitative_parser().parse_args()  # --help and argument errors answer before the evaluation and PyTorch load
    from sdsd.evaluation.qualitative import main

    main()
