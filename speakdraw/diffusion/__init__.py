"""Real-time img2img: StreamDiffusion over diffusers, for the `sd-turbo`, `sdxl-turbo` and `tiny` engines.

Exports only. `engine_factory.load_diffusion_engine(options)` builds an engine once from the modules
`pretrained.py` loads (or raises
`EngineUnavailable` saying why and what to do); `engine.new_session(settings)` gives each
call its own stream. `engine.py` holds the per-frame path and `process_batch` (many calls,
one step), `step.py` the step split around the UNet call (one session's rows in, its
prediction out), `stream_state.py` what each settings change re-prepares, `families.py`
how SD 1.5 / SD 2.x / SDXL are told apart.
"""

from speakdraw.diffusion.acceleration import ACCELERATIONS
from speakdraw.diffusion.architectures import Components, build_components
from speakdraw.diffusion.engine import DiffusionEngine, DiffusionSession
from speakdraw.diffusion.engine_factory import attach_ip_adapter, load_diffusion_engine
from speakdraw.diffusion.pretrained import DEFAULT_MODEL, LOADS
from speakdraw.diffusion.stream_state import t_index_list

__all__ = [
    "ACCELERATIONS",
    "DEFAULT_MODEL",
    "LOADS",
    "Components",
    "DiffusionEngine",
    "DiffusionSession",
    "attach_ip_adapter",
    "build_components",
    "load_diffusion_engine",
    "t_index_list",
]
