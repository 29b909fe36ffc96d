"""Layer blocks. Importing this package registers every block in ``detector.registry.BLOCKS``."""

from detector.nn import conv, gelan, heads  # noqa: F401
