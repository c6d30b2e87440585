"""econsg: open-vocabulary 3D semantic Gaussian Splatting (econSG, ICLR 2025)."""

__version__ = "0.1.0"
