"""miStudio (MechInterp Studio): train and study sparse autoencoders from JupyterLab."""

__version__ = "0.1.0"
