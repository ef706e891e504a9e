"""Installs the ``sdsd`` package (from ``codes/``) and the ``dcn`` package (from ``dcn/``)."""

from setuptools import find_packages, setup

setup(
    name="sdsd",
    version="1.0.0",
    description="SDSD-Net low-light video enhancement (ICCV 2021), a modern PyTorch implementation",
    python_requires=">=3.10",
    package_dir={"": "codes", "dcn": "dcn"},
    packages=find_packages("codes") + ["dcn"],
    package_data={"sdsd": ["data/*.txt"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy",
        "opencv-python-headless",
        "pyyaml",
        "scikit-image",
        "tensorboard",
        "tqdm",
        "lmdb",
        "av",
    ],
    # OpenVINO / ONNX Runtime backends (sdsd.runtimes, sdsd.export); imported lazily, the torch path needs none.
    extras_require={"runtimes": ["openvino", "onnx", "onnxruntime", "onnxscript"]},
    entry_points={"console_scripts": ["sdsd-enhance=sdsd.enhance:main"]},
)
