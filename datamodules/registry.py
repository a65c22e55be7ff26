"""The dataset registry, apart from the package `__init__` that imports
every dataset module: each dataset module imports this one to register
itself, so no module imports the package that imports it."""
from benchmark.extension.registry import Registry
from datamodules.base import BackdoorDataModule

DATASETS: Registry[type[BackdoorDataModule]] = Registry("dataset")
