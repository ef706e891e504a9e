"""PSNR/SSIM of a checkpoint on the test scenes of an option file (see sdsd.evaluation.quantitative).

    python quantitative_test.py -opt options/test/test_in_sdsd.yml
    python quantitative_test.py -opt options/test/test_in_sdsd.yml --predictions results/test_in_sdsd
    python quantitative_test.py -opt options/test/test_in_sdsd.yml --set "protocol.temporal=[warp,flicker]"
"""

import _sdsd_checkout  # noqa: F401 - first: puts this checkout's codes/ on sys.path (see _sdsd_checkout.py)
from sdsd.evaluation.common import quantitative_parser

if __name__ == "__main__":
    quantitative_parser().parse_args()  # --help and argument errors answer before the evaluation and PyTorch load
    from sdsd.evaluation.quantitative import main

    main()
