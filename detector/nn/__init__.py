"""Layer blocks. Importing this package registers every block in ``detector.registry.BLOCKS``."""

from detector.nn import (  # noqa: F401
    conv,
    gelan,
    heads,
    leyolo,  # noqa: F401
)
