"""Pretrained weights from other frameworks: safe reading (``safe_load``), explicit key mappings, ``convert``."""

from detector.convert.convert import SOURCES, convert, read_foreign
from detector.convert.mapping import KeyMapping, LoadReport, UnmappedKey, apply
from detector.convert.safe_pickle import Placeholder, UnsafePickle, module_state_dict, safe_load
