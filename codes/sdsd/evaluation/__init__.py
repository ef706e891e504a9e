"""Evaluation: the quantitative test (PSNR/SSIM, optionally temporal metrics; of a checkpoint or of frames written
elsewhere) and the qualitative test (images, panels, videos).

The network itself runs through :mod:`sdsd.inference` (the engine shared with training and ``sdsd.enhance``).

Modules:
    loop: ``run_frames``, the one evaluation loop (the engine over a dataset, each frame handed to consumers),
        ``FrameConsumer``.
    quantitative: ``Scorer`` (the protocol's per-frame scores and averaging), ``score`` (the scoring loop
        validation uses too), ``aggregate`` (the protocol's averaging), ``evaluate``, ``write_results``, ``main``
        (``quantitative_test.py``).
    qualitative: ``FrameWriter`` and ``PanelKeeper`` (loop consumers), ``run``, ``main`` (``qualitative_test.py``).
    temporal: ``TemporalScorer`` (loop consumer: warping error and flicker of consecutive frames,
        ``protocol.temporal``), ``finish`` (the pairs across the cuts between processes), ``aggregate_temporal``.
    predictions: ``Predictions`` and ``iterate_predictions``: frames another program wrote, scored by
        ``quantitative_test.py --predictions`` (``evaluate_predictions``).
    visualize: panels (``frame_panel``: the result panel of one frame), atomic PNG writes, videos.
"""
