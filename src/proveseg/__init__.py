"""proveseg: prove whether extra training data helps semantic segmentation."""

__version__ = "0.1.0"
