"""Enhanced frames, labelled panels and per-scene videos of the test scenes (see sdsd.evaluation.qualitative).

    python qualitative_test.py -opt options/test/test_in_sdsd.yml
"""

from sdsd.evaluation.qualitative import main

if __name__ == "__main__":
    main()
