"""The names of the ``conv_backend`` option, in a module that loads nothing, for command lines to parse with.

What each backend does is :func:`sdsd.archs.fastconv.apply_conv_backend`'s business.
"""

#: ``conv_backend`` values: ``auto`` = ``winograd`` on a CPU with NNPACK, else ``channels_last`` on a CPU, and the
#: plain layout on other devices; ``winograd`` = NCHW with the eligible convs on NNPACK; ``channels_last`` = oneDNN
#: NHWC (on CUDA too); ``nchw`` = plain PyTorch. The same for training and testing.
CONV_BACKENDS = ("auto", "winograd", "channels_last", "nchw")
