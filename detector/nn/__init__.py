"""Layer blocks. Importing this package registers every block in ``detector.registry.BLOCKS``."""

from detector.nn import classify, conv, gelan, heads, lsnet, osa  # noqa: F401
