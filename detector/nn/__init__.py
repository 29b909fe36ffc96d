"""Layer blocks. Importing this package registers every block in ``detector.registry.BLOCKS``."""

# One module per line so parallel additions merge cleanly.
import detector.nn.conv
import detector.nn.damo_backbone
import detector.nn.gelan
import detector.nn.heads
import detector.nn.leyolo
import detector.nn.repconv
import detector.nn.repgfpn
import detector.nn.zerohead
