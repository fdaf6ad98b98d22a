"""layerbot: a build-and-deploy bot for scientific software stacks."""

__version__ = "0.1.0"
