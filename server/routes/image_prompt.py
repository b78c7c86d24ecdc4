"""`/api/sessions/{id}/image-prompt`: an image the stream takes the look of (IP-Adapter).

- `POST`: the image as the raw body or the `file` field of a multipart form; png, jpeg or
  webp, told by its magic bytes (the Content-Type is not trusted). Refused, with nothing
  changed: over `ServerConfig.max_image_bytes` (413 `too_large`, streamed: never buffered whole first),
  another format (415 `unsupported_media_type`), more than `MAX_PIXELS` pixels (413
  `too_many_pixels`, checked from the header before any pixel is decoded, so a
  decompression bomb costs nothing; PIL's own bomb check is an error here too), a
  truncated or corrupt file (400 `bad_image`), an empty body (400 `empty_file`), and a
  model without a matching adapter (409 `image_prompt_unavailable`, with the reason).
  Decoding runs in the default executor; the CLIP encoding runs on the video worker
  between frames (it shares the device with the frames). Answer:
  `{"image_prompt": true, "width", "height", "format"}`; the next frame uses it.
- `DELETE`: clears it (`{"image_prompt": false}`); the next frame is as without one.
- `GET`: `{"image_prompt": bool, "available": bool, "reason": str | null}`.
"""

from __future__ import annotations

import asyncio
import io
import warnings

import numpy as np
from aiohttp import web
from PIL import Image, ImageOps

from server.errors import json_error
from server.state import STATE
from server.uploads import Refused, read_upload
from speakdraw.engines import ImagePromptUnavailable

MAX_PIXELS = 24_000_000  # a 6000x4000 photo
MAX_SIDE_KEPT = 1024  # larger images are shrunk after decoding: CLIP looks at 224x224
FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


def sniff(data: bytes) -> str | None:
    """'PNG', 'JPEG' or 'WEBP' from the first bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Upload bytes → (HxWx3 uint8 RGB, format name); raises Refused. Runs in an executor."""
    kind = sniff(data)
    if kind is None:
        raise Refused(415, "unsupported_media_type", "send a PNG, JPEG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise Refused(
                    413, "too_many_pixels", f"{width}x{height} is more than {max_pixels} pixels; send a smaller image"
                )
            if kind == "JPEG":
                image.draft("RGB", (MAX_SIDE_KEPT, MAX_SIDE_KEPT))  # decode at 1/2..1/8 scale when it is big
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos: upright as shown
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGB", image.size, (255, 255, 255))  # transparent = white, as viewers show it
                background.paste(image, mask=image.convert("RGBA").getchannel("A"))
                image = background
            image = image.convert("RGB")
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Refused(413, "too_many_pixels", f"refused as a decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated, corrupt, unreadable
        raise Refused(400, "bad_image", f"cannot decode the {FORMATS[kind]} image: {exc}") from None
    image.thumbnail((MAX_SIDE_KEPT, MAX_SIDE_KEPT), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8), FORMATS[kind]


def _session(request: web.Request):
    return request.app[STATE].sessions.get(request.match_info["id"])


async def post_image_prompt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = _session(request)
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    reason = state.image_prompt_reason()
    if reason:
        return json_error(409, "image_prompt_unavailable", reason)
    loop = asyncio.get_running_loop()
    try:
        data = await read_upload(request, state.config.max_image_bytes, "an image")
        if not data:
            raise Refused(400, "empty_file", "the uploaded file is empty")
        rgb, kind = await loop.run_in_executor(state.workers.io, decode_image, data)
    except Refused as exc:
        return json_error(exc.status, exc.code, exc.message)
    try:
        await state.workers.runner.run(lambda: session.pipeline.set_image_prompt(rgb))
    except ImagePromptUnavailable as exc:
        return json_error(409, "image_prompt_unavailable", str(exc))
    except RuntimeError as exc:  # the worker pool is shutting down
        return json_error(503, "shutting_down", str(exc))
    height, width = rgb.shape[:2]
    return web.json_response({"image_prompt": True, "width": width, "height": height, "format": kind})


async def delete_image_prompt(request: web.Request) -> web.Response:
    session = _session(request)
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    session.pipeline.set_image_prompt(None)  # no model work: the next frame drops the tokens
    return web.json_response({"image_prompt": False})


async def get_image_prompt(request: web.Request) -> web.Response:
    session = _session(request)
    if session is None:
        return json_error(404, "unknown_session", "no such session")
    reason = request.app[STATE].image_prompt_reason()
    return web.json_response(
        {"image_prompt": session.pipeline.has_image_prompt, "available": reason is None, "reason": reason}
    )


def setup(app: web.Application) -> None:
    route = "/api/sessions/{id}/image-prompt"
    app.router.add_post(route, post_image_prompt)
    app.router.add_delete(route, delete_image_prompt)
    app.router.add_get(route, get_image_prompt)
