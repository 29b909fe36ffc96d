"""Packaging beyond what pyproject.toml can say: the top-level ``models/`` and ``configs/`` folders ship inside
the wheel as ``detector/models`` and ``detector/configs`` (read through ``detector.resources``), without a copy
in the repository. Everything else (metadata, dependencies, extras) lives in pyproject.toml."""

from setuptools import find_packages, setup

# repository folder -> where it lands inside the installed package
DATA_PACKAGES = {"detector.models": "models", "detector.configs": "configs"}

setup(
    packages=find_packages(include=["detector*", "deploy*", "cuda_ops*"]) + list(DATA_PACKAGES),
    package_dir=DATA_PACKAGES,
    package_data={"": ["*.yaml"], **{name: ["**/*.yaml"] for name in DATA_PACKAGES}},
)
