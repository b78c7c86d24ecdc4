"""Test media made on the fly with ffmpeg / espeak-ng / sox: a y4m fake camera and a wav fake microphone.

Chromium plays these in a loop with `--use-file-for-fake-video-capture` / `--use-file-for-fake-audio-capture`,
so browser tests need no real devices and no files in git.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed (apt-get install {tool})")
    return path


def make_y4m(
    out_dir: Path,
    *,
    width: int = 512,
    height: int = 512,
    fps: int = 15,
    seconds: float = 2.0,
    source: str = "testsrc2",
    name: str = "camera.y4m",
) -> Path:
    """A raw YUV4MPEG2 clip of an ffmpeg test pattern with motion (`testsrc2` has a moving box and a clock).

    y4m is uncompressed (width*height*1.5 bytes a frame), so keep it short: Chromium loops it.
    """
    path = Path(out_dir) / name
    subprocess.run(
        [
            _need("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"{source}=size={width}x{height}:rate={fps}",
            "-t", str(seconds), "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def make_speech_wav(
    out_dir: Path,
    text: str,
    *,
    rate: int = 48000,
    pad_s: float = 0.5,
    voice: str = "en-us",
    name: str = "speech.wav",
) -> Path:
    """Spoken `text` (espeak-ng), resampled by sox to 16-bit mono at `rate`, with `pad_s` of silence either side.

    The silence lets a VAD see where the utterance starts and ends when Chromium loops the file.
    """
    out_dir = Path(out_dir)
    raw = out_dir / f"{Path(name).stem}.espeak.wav"
    path = out_dir / name
    subprocess.run([_need("espeak-ng"), "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(
        [_need("sox"), str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path), "pad", str(pad_s), str(pad_s)],
        check=True,
    )
    raw.unlink()
    return path


def make_silence_wav(out_dir: Path, *, seconds: float = 1.0, rate: int = 48000, name: str = "silence.wav") -> Path:
    """A silent 16-bit mono wav: a fake microphone that says nothing."""
    path = Path(out_dir) / name
    subprocess.run(
        [_need("sox"), "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)],
        check=True,
    )
    return path
