"""miStudio (MechInterp Studio): train and study sparse autoencoders from JupyterLab.

    import mistudio
    job = mistudio.steer("tr_abc123", "The weather today is", {123: 4.0})   # feature steering (a Job)

`import mistudio` stays light: `steer` is imported on first use.
"""

from mistudio.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["steer"]
__getattr__ = lazy_exports(__name__, {"steer": "generation"})
