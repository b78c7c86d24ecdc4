"""SpeakDraw's media brain: settings, weights, matting, diffusion, speech, the per-session pipeline.

Never imports the network stack (aiohttp, aiortc, av): usable from a notebook.
"""

from speakdraw.pipeline import Pipeline
from speakdraw.settings import Settings

__all__ = ["Pipeline", "Settings"]
__version__ = "0.1.0"
