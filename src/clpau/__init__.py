"""clpau: contrastive learning of person-independent facial action unit representations (CLP) from face video."""

__version__ = "0.1.0"
