"""Layer blocks. Importing this package registers every block in ``detector.registry.BLOCKS``."""

from detector.nn import conv, damo_backbone, gelan, heads, repconv, repgfpn, zerohead  # noqa: F401
