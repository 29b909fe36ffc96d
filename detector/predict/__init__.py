"""Inference on images and videos: sources, backends, ``Detector`` and ``Results``."""
