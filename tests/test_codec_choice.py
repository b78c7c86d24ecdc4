"""`--video-codec auto` picks the codec this server encodes most cheaply, measured (issue 19, point 1).

With software encoders (aiortc's libvpx and libx264, as here) that is VP8; H.264 only where its encoder
measures cheaper (a hardware one). The pick, why, and the measured costs are in `/api/settings` and the
log; `/api/ice` tells the page. Through real calls: the negotiated codec and the encode time each call
pays, `auto` against `--video-codec h264` in the same run.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import pytest

from server import codecs
from server.codec_cost import EncodeCost, EncodeCostProbe, clip
from tests.rtc_client import PatternVideoTrack, RtcClient


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.loads(resp.read())


def measured_choice(base: str, timeout: float = 30.0) -> dict:
    """`/api/settings` `server.video_codec` once the start-up measurement is in."""
    deadline = time.monotonic() + timeout
    while True:
        info = get(base, "/api/settings")["server"]["video_codec"]
        if info["encode_ms"] or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


class Measured(EncodeCostProbe):
    """A probe whose measurement is given (the choice logic, without timing this machine)."""

    def __init__(self, cost: EncodeCost | None) -> None:
        super().__init__()
        self._result = cost


def test_cheapest_codec_is_picked_and_h264_must_earn_it():
    software = Measured(EncodeCost(512, {"vp8": 5.5, "h264": 17.4}))
    hardware = Measured(EncodeCost(512, {"vp8": 5.5, "h264": 1.2}))
    about_even = Measured(EncodeCost(512, {"vp8": 5.5, "h264": 5.0}))  # not clearly cheaper: VP8 stays
    no_x264 = Measured(EncodeCost(512, {"vp8": 5.5}, errors={"h264": "UnknownCodecError: libx264"}))
    assert codecs.picked("auto", software) == "vp8"
    assert codecs.picked("auto", hardware) == "h264"
    assert codecs.picked("auto", about_even) == "vp8"
    assert codecs.picked("auto", no_x264) == "vp8"
    assert codecs.picked("auto", Measured(None)) == "vp8"  # before the measurement: the software guess
    assert codecs.codec_order("auto", hardware) == ("video/H264", "video/VP8")  # both offered, cheaper first
    assert codecs.picked("h264", software) == "h264"  # an explicit override wins
    described = codecs.describe("auto", no_x264)
    assert described["picked"] == "vp8" and "libx264" in described["reason"] and described["encode_ms"] == {"vp8": 5.5}


def test_the_probe_measures_aiortcs_own_encoders_in_bounded_time():
    cost = EncodeCostProbe(side=256, frames=4, rounds=1, budget_s=3.0).measure()
    assert set(cost.ms) == {"vp8", "h264"} and all(ms > 0 for ms in cost.ms.values()), cost
    assert cost.seconds < 10.0  # a budget of 3 s per measurement plus one encoder's last frame


class TexturedCamera(PatternVideoTrack):
    """A camera whose picture has detail and motion (a flat test card costs any encoder next to nothing)."""

    def __init__(self, fps: float) -> None:
        super().__init__(fps)
        self.clip = [f.to_ndarray(format="rgb24") for f in clip(512, 30)]

    async def recv(self):
        self.image = self.clip[self._count % len(self.clip)]
        return await super().recv()


def mean_encode_ms(base: str) -> tuple[float, int]:
    """The server's mean encode+send time per frame over every frame so far (`/metrics`), and the frame count."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = float(re.search(r'speakdraw_stage_latency_seconds_sum\{stage="encode"\} (\S+)', text).group(1))
    count = float(re.search(r'speakdraw_stage_latency_seconds_count\{stage="encode"\} (\S+)', text).group(1))
    return total * 1000.0 / max(count, 1.0), int(count)


async def call_codec(server, seconds: float) -> str:
    """Run a call with a textured camera; its negotiated video codec (the answer's first)."""
    client = RtcClient(server.base, fps=15)
    client.video = TexturedCamera(15)
    try:
        await client.connect()
        await client.wait_frames(5)
        await asyncio.sleep(seconds)
        video = client.answer["sdp"].split("m=video", 1)[1].split("m=", 1)[0]
        first_pt = video.splitlines()[0].split()[2]
        return re.search(rf"a=rtpmap:{first_pt} (\w+)/90000", video).group(1)
    finally:
        await client.close()


async def test_auto_negotiates_the_cheaper_codec_and_pays_less_to_encode_than_h264(start_server):
    # --video-codec auto is the default; both keep the requested size, so that the cheaper encoder cannot be
    # hidden by the other server stepping its working size down (--degradation balanced would, under load)
    same_size = ("--degradation", "maintain-resolution")
    auto, h264 = start_server(*same_size), start_server("--video-codec", "h264", *same_size)
    info = measured_choice(auto.base)
    assert info["setting"] == "auto" and set(info["encode_ms"]) == {"vp8", "h264"}, info
    assert info["picked"] == ("h264" if info["encode_ms"]["h264"] < 0.8 * info["encode_ms"]["vp8"] else "vp8"), info
    assert info["picked"] == "vp8", info  # software encoders (aiortc's libvpx, libx264) here: VP8 is cheaper
    assert "cheapest to encode here" in info["reason"]
    assert get(auto.base, "/api/ice")["videoCodec"] == "vp8"
    assert "video codec: vp8 (--video-codec auto: cheapest to encode here" in auto.log_text()
    assert measured_choice(h264.base)["picked"] == "h264"
    assert get(h264.base, "/api/ice")["videoCodec"] == "h264"
    # both calls at once, so load from other work on this machine hits both alike
    codecs_used = await asyncio.gather(call_codec(auto, 8.0), call_codec(h264, 8.0))
    (auto_ms, auto_frames), (h264_ms, h264_frames) = mean_encode_ms(auto.base), mean_encode_ms(h264.base)
    auto_cpu = auto.health()["capacity"]["cpu_ms_per_frame"]
    h264_cpu = h264.health()["capacity"]["cpu_ms_per_frame"]
    print(
        codecs_used,
        f"auto {auto_ms:.1f} ms ({auto_frames} frames, cpu {auto_cpu} ms),",
        f"h264 {h264_ms:.1f} ms ({h264_frames}, cpu {h264_cpu} ms)",
    )
    assert codecs_used == ["VP8", "H264"]
    assert auto_frames >= 30 and h264_frames >= 30
    # What auto picked costs the server less CPU per frame than H.264 (same run, both calls at once): that is the
    # cost the codec is picked by. In a call the gap is smaller than the encoders' own (the probe above): the server
    # also decodes the caller's video, and H.264 decodes cheaper than VP8. Measured here, 9 runs (4 beside a busy
    # core) and one CI run: CPU 16.4-18.4 vs 21.6-23.4 ms a frame, ratio 0.75-0.83.
    assert info["encode_ms"]["vp8"] < info["encode_ms"]["h264"], info
    assert auto_cpu <= 1.15 * h264_cpu, (auto_cpu, h264_cpu)
    # The encode stage's wall time (encode + packetise + send) is latency, not cost, and it is noisier: libx264
    # (tune zerolatency) slices each frame over both cores (21.5 ms CPU in 13.8 ms wall at 512 px here), while
    # aiortc runs libvpx on one thread below 640x480. So H.264 can match VP8's wall time while costing 1.3x the
    # CPU; the same runs read 0.80-1.18 (CI 7.6 vs 6.6 ms = 1.15). The bound: auto's stage takes at most 1.5x H.264's.
    assert auto_ms <= 1.5 * h264_ms, (auto_ms, h264_ms)


@pytest.mark.browser
def test_the_page_and_the_server_agree_on_the_cheaper_codec_in_chromium(camera_chromium, start_server):
    """Default flags: the page reads `videoCodec` from /api/ice and prefers it; Chromium sends and receives VP8."""
    from tests.test_network_browser import open_page, wait_playing

    server = start_server()
    measured_choice(server.base)
    context, page = open_page(camera_chromium, server.base)
    try:
        page.click("#start")
        stats = wait_playing(page)
        assert stats["inCodec"] == "video/VP8" and stats["outCodec"] == "video/VP8", stats
    finally:
        context.close()
