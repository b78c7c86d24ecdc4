"""The `style` engine: Magenta fast style transfer (26 styles + arbitrary style) on ONNX Runtime.

`table` (the 26 styles, prompt → style) is pure Python and cheap to import (spoken commands use
it); `engine` loads ONNX Runtime and the weights, so `ENGINES` imports it only when asked.
"""
