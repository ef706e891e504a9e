"""Evaluation: the quantitative test (PSNR/SSIM) and the qualitative test (images, panels, videos).

The network itself runs through :mod:`sdsd.inference` (the engine shared with training and ``sdsd.enhance``).

Modules:
    quantitative: ``score`` (the scoring loop validation uses too), ``aggregate`` (the protocol's averaging),
        ``evaluate``, ``write_results``, ``main`` (``quantitative_test.py``).
    qualitative: ``run``, ``main`` (``qualitative_test.py``).
    visualize: panels, atomic PNG writes, videos.
"""
