"""partseg: zero- and few-shot 3D part segmentation from 2D vision-language models."""

__version__ = "0.1.0"
