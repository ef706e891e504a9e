"""PSNR/SSIM of a checkpoint on the test scenes of an option file (see sdsd.evaluation.quantitative).

    python quantitative_test.py -opt options/test/test_in_sdsd.yml
"""

from sdsd.evaluation.quantitative import main

if __name__ == "__main__":
    main()
