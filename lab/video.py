"""Videos in dataset records: reading them within a frame and pixel budget, through qwen-vl-utils.

A record names its videos as ms-swift does, a ``<video>`` placeholder in the messages for
each entry of ``videos``::

    {"videos": ["videos/clip_01"], "messages": [{"role": "user", "content": "<video>What happens?"}, ...]}

An entry is a video file (``.mp4``, ``.webm``, ...) or a folder of frames (image files,
in name order). The families whose entry in :mod:`lab.families` says ``video`` take it (:data:`VIDEO_FAMILIES`).

Frames are sampled and resized by the rules of qwen-vl-utils, the Qwen models' own
preprocessing: ``smart_nframes`` picks how many frames of a file to keep (``video_fps`` per
second, at most ``video_max_frames``, an even number) and ``smart_resize`` sizes them to
multiples of the patch x merge size with at most ``video_max_pixels`` per frame, as its
``fetch_video`` does for a decoded file. Files are decoded with PyAV,
which qwen-vl-utils depends on: its own readers need decord, torchcodec or a torchvision
before 0.22 (whose ``read_video`` is gone), none of which this project requires. A folder
of frames is taken as already sampled at ``video_fps``; more than ``video_max_frames``
frames are thinned evenly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.conversation import VIDEO_PLACEHOLDER  # noqa: F401  (with the video rules, for the checker)
from lab.errors import BadImageError, DatasetError
from lab.families import FAMILIES
from lab.images import IMAGE_SUFFIXES, open_image
from lab.text import Msg

VIDEO_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.video)


@dataclass(frozen=True)
class VideoBudget:
    """How much of a video the model sees: the TrainConfig fields ``video_*`` (a run's, or the defaults)."""

    max_frames: int
    fps: float
    max_pixels: int

    @classmethod
    def of(cls, config: Any = None) -> VideoBudget:
        """The budget of a ``TrainConfig`` or of a run's saved config (a dict); the defaults for None."""
        from lab.train_config import TrainConfig

        if config is None:
            config = TrainConfig()
        get = config.get if isinstance(config, dict) else lambda name, default: getattr(config, name, default)
        defaults = TrainConfig.__dataclass_fields__
        values = {name: get(f"video_{name}", None) for name in ("max_frames", "fps", "max_pixels")}
        return cls(**{k: v if v is not None else defaults[f"video_{k}"].default for k, v in values.items()})


@dataclass
class Video:
    """A video ready for the processor: frames ``(T, C, H, W)`` (float, 0-255) and where they came from."""

    frames: Any
    fps: float  # the source's frames per second
    indices: list[int] = field(default_factory=list)  # the frames taken, in the source's numbering
    total_frames: int = 0  # frames in the source

    @property
    def metadata(self) -> dict:
        """What the video processors want to know (Qwen3-VL writes each frame's time from it)."""
        return {"fps": self.fps, "frames_indices": list(self.indices), "total_num_frames": self.total_frames}


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_video(path: str | Path, budget: VideoBudget, patch_size: int = 14) -> Video:
    """Sample and resize the video at ``path`` (a file or a folder of frames) within ``budget``.

    Raises :class:`DatasetError` naming the video and the reason when it cannot be read.
    """
    path = Path(path)
    frames, fps, indices, total = _frames_of_folder(path, budget) if path.is_dir() else _frames_of_file(path, budget)
    return Video(_resized(frames, budget, patch_size * 2, path), fps, indices + indices[-1:] * (len(frames) % 2), total)


def _resized(frames: list, budget: VideoBudget, factor: int, path: Path) -> Any:
    """The frames as one ``(T, C, H, W)`` tensor, resized as qwen-vl-utils' ``fetch_video`` resizes a decoded file.

    ``fetch_video`` itself is not handed the frames: for a list of frames it first resizes each
    one through ``fetch_image`` with the merged factor (28) taken for the patch size, which
    rounds frames to multiples of 56 and fails on frames under 56 pixels high.
    """
    import numpy as np
    import torch
    from qwen_vl_utils.vision_process import FRAME_FACTOR, smart_resize
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    video = torch.stack([torch.from_numpy(np.array(frame.convert("RGB"))).permute(2, 0, 1) for frame in frames])
    if video.shape[0] % FRAME_FACTOR:  # two frames make one temporal patch; repeat the last, as qwen-vl-utils does
        video = torch.cat([video, video[-1:]])
    height, width = video.shape[-2:]
    try:
        new_h, new_w = smart_resize(
            height, width, factor=factor, max_pixels=budget.max_pixels, min_pixels=min(budget.max_pixels, 4 * factor**2)
        )
    except ValueError as err:  # an aspect ratio over 200
        raise DatasetError("Video {path} cannot be used: {err}.", path=path, err=err) from None
    new_h, new_w = max(new_h, factor), max(new_w, factor)
    return resize(video, [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()


def _frames_of_folder(folder: Path, budget: VideoBudget) -> tuple[list, float, list[int], int]:
    files = frame_files(folder)
    if not files:
        raise DatasetError("Video {path} cannot be used: the folder holds no frames.", path=folder)
    keep = _evenly(len(files), budget.max_frames)
    return [open_image(files[i]) for i in keep], budget.fps, keep, len(files)


def _evenly(total: int, most: int) -> list[int]:
    if total <= most:
        return list(range(total))
    return [round(k * (total - 1) / (most - 1)) for k in range(most)]


def _frames_of_file(path: Path, budget: VideoBudget) -> tuple[list, float, list[int], int]:
    """The frames qwen-vl-utils would take from a file: ``smart_nframes`` of them, evenly spaced.

    Only the frames taken are kept while decoding, so a long video never sits in memory whole.
    """
    import av
    import torch
    from qwen_vl_utils.vision_process import smart_nframes

    if not path.is_file():
        raise DatasetError("Video {path} cannot be used: file not found.", path=path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0) or budget.fps
            total = stream.frames or sum(1 for _ in container.decode(stream))
        count = smart_nframes({"fps": budget.fps, "max_frames": budget.max_frames}, total, fps) if total > 1 else total
        keep = torch.linspace(0, total - 1, count).round().long().tolist()
        wanted, frames = set(keep), {}
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index in wanted:
                    frames[index] = frame.to_image().convert("RGB")
                if index >= keep[-1]:
                    break
    except (av.FFmpegError, IndexError, OSError, ValueError) as err:
        raise DatasetError(
            "Video {path} cannot be used: not a readable video ({err}).",
            path=path,
            err=str(err).splitlines()[0] if str(err) else type(err).__name__,
        ) from None
    if not frames:
        raise DatasetError("Video {path} cannot be used: it has no frames.", path=path)
    last = frames[max(frames)]  # a container may promise more frames than it holds
    return [frames.get(i, last) for i in keep], fps, keep, total


def video_fault(path: Path) -> Msg | None:
    """Why the video at ``path`` cannot be used (None when it can): every frame of a folder, a file's first frame."""
    try:
        if path.is_dir():
            files = frame_files(path)
            if not files:
                return Msg("the folder holds no frames")
            for file in files:
                open_image(file)
            return None
        return _file_fault(path)
    except BadImageError as err:
        return Msg("frame {name}: {reason}", name=Path(err.path).name, reason=err.reason)


def _file_fault(path: Path) -> Msg | None:
    import av

    if not path.is_file():
        return Msg("file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return Msg("the file has no video stream")
            next(container.decode(container.streams.video[0]))
    except StopIteration:
        return Msg("it has no frames")
    except (av.FFmpegError, OSError, ValueError) as err:
        return Msg("not a readable video ({err})", err=str(err).splitlines()[0] if str(err) else type(err).__name__)
    return None


def processor_media(processor: Any, images: list[str], videos: list[str], budget: VideoBudget | None) -> dict:
    """The processor's ``images`` and ``videos`` arguments for a sample's files (videos read within ``budget``)."""
    media = processor_videos(
        processor, [read_video(v, budget or VideoBudget.of(), patch_size(processor)) for v in videos]
    )
    if images:
        media["images"] = [open_image(p) for p in images]
    return media


def processor_videos(processor: Any, videos: list[Video]) -> dict:
    """The processor's arguments for ``videos``, already sampled and resized here."""
    if not videos:
        return {}
    options = {
        "do_resize": False,
        "do_sample_frames": False,
        "cap_pixels_per_frame": True,
        "video_metadata": [v.metadata for v in videos],
    }
    return {"videos": [v.frames for v in videos], "videos_kwargs": options}


def patch_size(processor: Any) -> int:
    """The video processor's patch size (14 for Qwen2/2.5-VL, 16 for Qwen3-VL)."""
    video_processor = getattr(processor, "video_processor", None) or getattr(processor, "image_processor", None)
    return int(getattr(video_processor, "patch_size", 14))
