"""Evaluation: the quantitative test (PSNR/SSIM), the qualitative test (images, panels, videos) and the
feature-reuse inference they share.

Modules:
    inference: ``load_model``, ``plan_work``, ``enhance_windows``, ``iterate_work`` (feature reuse, self-ensemble).
    quantitative: ``evaluate``, ``aggregate``, ``write_results``, ``main`` (``quantitative_test.py``).
    qualitative: ``run``, ``main`` (``qualitative_test.py``).
    visualize: panels, atomic PNG writes, videos.
"""
