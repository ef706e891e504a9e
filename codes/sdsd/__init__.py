"""SDSD-Net: low-light video enhancement ("Seeing Dynamic Scene in the Dark", ICCV 2021).

Public API:
    build_network(network_opts) -> nn.Module
    load_network(net, path, strict=True)

Both are imported lazily so that light modules (options, errors, data tools) load without the network code.
"""

__version__ = "1.0.0"
__all__ = ["build_network", "load_network", "__version__"]


def __getattr__(name):
    if name in ("build_network", "load_network"):
        from sdsd import archs

        return getattr(archs, name)
    raise AttributeError(f"module 'sdsd' has no attribute {name!r}")
