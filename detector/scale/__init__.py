"""Batch inference beyond one process: ``predict_dataset`` runs a pool of model actors over Ray Data.

``detector predict model=... source=... engine=ray [workers=N] [batch=B] [out=DIR]`` is the CLI form.
Ray is an optional extra (``pip install detector[ray]``); nothing here imports it until a run starts.
"""

from detector.scale.image_list import list_images
from detector.scale.ray_predict import ROW_FIELDS, ScaleRun, predict_dataset, read_detections
