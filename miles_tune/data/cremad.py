"""CREMA-D (Cao et al. 2014) as published: ``AudioWAV/<clip>.wav`` + ``VideoFlash/<clip>.flv``.

Layout under ``data_root`` (default ``$MILES_TUNE_DATA/cremad`` or
``~/.cache/miles_tune/data/cremad``; the repository's checkout with its git-LFS media)::

    AudioWAV/1001_DFA_ANG_XX.wav ...     7,442 clips, 16 kHz
    VideoFlash/1001_DFA_ANG_XX.flv ...   or, instead, OGM-GE's pre-extracted frames:
    Image-01-FPS/1001_DFA_ANG_XX/00000.jpg ...

Clips are the WAV file names; the label is the acted emotion, the third ``_`` token of
the name, in OGM-GE's class order NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5.

**Split (MILES).** Clip-level random 70/15/15 (not speaker-disjoint; the paper says
nothing else): ``random_split(range(N), [0.7, 0.15, 0.15], generator=seed)`` over the
sorted usable clips, so 7,442 clips give 5,210 / 1,116 / 1,116. The clip names of
each split are saved in the cache's ``split.json``.

**Audio (MILES: 257×299 spectrogram, window 512, overlap 353, 16 kHz, 3 s).** Read the
WAV, resample to 16 kHz if the header says otherwise, tile (repeat) and cut to exactly
3 s = 48,000 samples (OGM-GE's way of filling short clips), clip to [-1, 1], scipy-style
power spectrogram (Tukey window, nperseg 512, noverlap 353 → 257×299), ``log(S + 1e-7)``,
z-normalise per clip, bilinear resize to 1×224×224. The log, z-norm and tiling are the
usual AVE/Kinetics-Sounds preprocessing around this exact scipy call; the paper does
not state them [inferred].

**Video (MILES: "one frame from each clip").** Which frame is not stated; we take the
middle one (``frame_position=0.5``) for every split, decoded with PyAV, resized with
antialiased bilinear to 224×224 and stored as uint8; read-time normalisation with the
ImageNet mean/std. OGM-GE samples a random frame per epoch in training; a cache stores
one frame per clip, so that augmentation is not reproduced here.

**Known-broken clips.** The CREMA-D README lists ``1076_MTI_SAD_XX`` (no audio),
``1064_TIE_SAD_XX`` ("no duration"), ``1076_MTI_NEU_XX`` (very short, no audio) and
``1064_IEO_DIS_MD`` (one minute long, all emotions). Each one present is test-decoded
when the split is planned; those that fail (no samples, no frame, unreadable file) are
skipped with a warning and counted in ``info["skipped"]`` (``broken="skip"``), or kept
with an all-zero input (``broken="zero"``, which keeps N = 7,442 as in the paper). Those
that decode are kept, as the paper's 7,442 count implies. Any other clip that fails is
an error naming the file, and so is a clip whose decoded audio holds NaN or infinite
values (a float WAV can), refused when the cache is built. The probe lists ``AudioWAV/``
and stats every WAV and video; it decodes nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from miles_tune.data import register_dataset
from miles_tune.data.audio import fit_length, read_wav, resample, scipy_spectrogram
from miles_tune.data.base import EncoderSpec, MultimodalData
from miles_tune.data.cache import LABEL, Field, FileDataset, Plan, dataset_factory
from miles_tune.data.errors import BrokenSample, DatasetError, choice_option, float_option, int_option
from miles_tune.data.media import read_image, read_video_frame, resize_hwc
from miles_tune.data.splits import fraction_sizes, fraction_split
from miles_tune.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_to_input

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # OGM-GE's class order
KNOWN_BROKEN = {
    "1076_MTI_SAD_XX": "README: no audio, very short",
    "1064_TIE_SAD_XX": "README: no duration",
    "1076_MTI_NEU_XX": "README: very short FLV without audio",
    "1064_IEO_DIS_MD": "README: one minute long, contains all emotions",
}
AUDIO_DIR, VIDEO_DIR, FRAMES_DIR = "AudioWAV", "VideoFlash", "Image-01-FPS"
MODALITIES = ("audio", "video")


def parse_clip(name: str, path: Path | None = None) -> int:
    """Class index of a clip name ``AAAA_SSS_EEE_LL``; a clear error otherwise."""
    parts = name.split("_")
    if len(parts) != 4 or parts[2] not in EMOTIONS:
        raise DatasetError(
            f"cannot read the emotion of {name!r}: CREMA-D names look like 1001_DFA_ANG_XX "
            f"with the emotion one of {', '.join(EMOTIONS)}",
            path,
        )
    return EMOTIONS.index(parts[2])


class CremaD(FileDataset):
    name = "cremad"
    version = 1
    modalities = MODALITIES
    classes = EMOTIONS

    def __init__(
        self,
        data_root: str | os.PathLike[str] | None,
        *,
        video: str = "auto",
        frames_dir: str = FRAMES_DIR,
        frame_position: float = 0.5,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        sample_rate: int = 16000,
        duration: float = 3.0,
        nperseg: int = 512,
        noverlap: int = 353,
        audio_size: int = 224,
        image_size: int = 224,
        broken: str = "skip",
    ) -> None:
        n = self.name
        video = choice_option(n, "video", video, ("auto", "flv", "frames"))
        self.broken = choice_option(n, "broken", broken, ("skip", "zero"))
        self.frame_position = float_option(n, "frame_position", frame_position, 0.0, 1.0)
        self.seed = int_option(n, "seed", seed, minimum=0)
        self.sample_rate = int_option(n, "sample_rate", sample_rate)
        self.duration = float_option(n, "duration", duration, low=0.0)
        self.nperseg = int_option(n, "nperseg", nperseg, minimum=2)
        self.noverlap = int_option(n, "noverlap", noverlap, minimum=0)
        self.audio_size = int_option(n, "audio_size", audio_size)
        self.image_size = int_option(n, "image_size", image_size)
        if self.noverlap >= self.nperseg:
            raise DatasetError(
                f"cremad: data.noverlap ({self.noverlap}) must be below data.nperseg ({self.nperseg})"
            )
        self.n_samples = int(round(self.duration * self.sample_rate))
        if self.n_samples < self.nperseg:
            raise DatasetError(
                f"cremad: data.duration * data.sample_rate = {self.n_samples} samples is shorter than "
                f"data.nperseg = {self.nperseg}"
            )
        try:
            self.fractions = tuple(float(f) for f in fractions)
            if len(self.fractions) != 3:
                raise ValueError("need three")
            fraction_sizes(1, self.fractions)
        except (TypeError, ValueError):
            raise DatasetError(
                f"cremad: data.fractions must be three numbers >= 0 (train, val, test) that sum to 1, "
                f"got {fractions!r}"
            ) from None
        super().__init__(data_root)
        self.audio_dir = self.root / AUDIO_DIR
        if not self.audio_dir.is_dir():
            raise self.missing(self.audio_dir, "folder", "the CREMA-D WAV files")
        if video == "auto":
            video = "flv" if (self.root / VIDEO_DIR).is_dir() else "frames"
        self.video = video
        self.video_dir = self.root / (VIDEO_DIR if video == "flv" else frames_dir)
        if not self.video_dir.is_dir():
            what = (
                "the CREMA-D FLV files" if video == "flv" else "OGM-GE's extracted frames, <clip>/00000.jpg"
            )
            raise self.missing(self.video_dir, "folder", what)
        self.frames_dir = frames_dir
        self.clips = sorted(p.stem for p in self.audio_dir.glob("*.wav"))
        if not self.clips:
            raise self.files_error(f"cremad: no .wav files in {self.audio_dir}", self.audio_dir)
        self._zero: set[str] = set()

    # --- description ---------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "frames_dir": self.frames_dir if self.video == "frames" else None,
            "frame_position": self.frame_position,
            "seed": self.seed,
            "fractions": list(self.fractions),
            "sample_rate": self.sample_rate,
            "duration": self.duration,
            "nperseg": self.nperseg,
            "noverlap": self.noverlap,
            "audio_size": self.audio_size,
            "image_size": self.image_size,
            "broken": self.broken,
        }

    def _video_path(self, clip: str) -> Path:
        return self.video_dir / (f"{clip}.flv" if self.video == "flv" else clip)

    def source_files(self) -> list[Path]:
        files = [self.audio_dir / f"{c}.wav" for c in self.clips]
        # an absent video is reported by plan() with a clearer message; frame folders are fingerprinted
        # by their own stat (their mtime changes when frames are added or removed)
        files += [p for p in (self._video_path(c) for c in self.clips) if p.exists()]
        return files

    def sample_source(self, sample_id: str, field: str) -> str:
        return str(self._video_path(sample_id) if field == "video" else self.audio_dir / f"{sample_id}.wav")

    def fields(self) -> dict[str, Field]:
        return {
            "audio": Field((1, self.audio_size, self.audio_size), "float32"),
            "video": Field((self.image_size, self.image_size, 3), "uint8"),
            LABEL: Field((), "int64"),
        }

    def transforms(self, stats: dict[str, list[float]]):
        return {"video": image_to_input(IMAGENET_MEAN, IMAGENET_STD)}

    def check_headers(self) -> None:
        """Clip names (the labels) and every clip's video, as :meth:`plan` checks them, without decoding."""
        for clip in self.clips:
            parse_clip(clip, self.audio_dir / f"{clip}.wav")
            if clip not in KNOWN_BROKEN and not self._video_path(clip).exists():
                raise self.files_error(
                    f"cremad: missing video for clip {clip}: {self._video_path(clip)}", self._video_path(clip)
                )

    # --- planning ------------------------------------------------------------------------
    def plan(self) -> Plan:
        skipped: dict[str, str] = {}
        usable = []
        for clip in self.clips:
            parse_clip(clip, self.audio_dir / f"{clip}.wav")
            if clip in KNOWN_BROKEN:
                try:
                    self._decode(clip)
                except (BrokenSample, DatasetError) as exc:
                    reason = f"{KNOWN_BROKEN[clip]}; {exc}"
                    if self.broken == "skip":
                        skipped[clip] = reason
                        continue
                    self._zero.add(clip)
            elif not self._video_path(clip).exists():
                raise self.files_error(
                    f"cremad: missing video for clip {clip}: {self._video_path(clip)}", self._video_path(clip)
                )
            usable.append(clip)
        parts = fraction_split(len(usable), self.fractions, self.seed)
        ids = {s: [usable[i] for i in part] for s, part in zip(("train", "val", "test"), parts, strict=True)}
        return Plan(
            ids=ids, skipped=skipped, info={"classes": list(EMOTIONS), "zero_filled": sorted(self._zero)}
        )

    # --- decoding ------------------------------------------------------------------------
    def _spectrogram(self, clip: str) -> np.ndarray:
        path = self.audio_dir / f"{clip}.wav"
        samples, rate = read_wav(path)
        if samples.size == 0:
            raise BrokenSample(clip, f"{path} has no audio samples", path)
        x = torch.from_numpy(samples).to(torch.float64)
        if rate != self.sample_rate:
            x = resample(x, rate, self.sample_rate)
        x = fit_length(x, self.n_samples, "tile").clamp(-1.0, 1.0)
        spec = scipy_spectrogram(
            x, self.sample_rate, self.nperseg, self.noverlap
        )  # (257, 299) at the defaults
        spec = torch.log(spec + 1e-7)
        spec = (spec - spec.mean()) / (spec.std() + 1e-8)
        size = (self.audio_size, self.audio_size)
        out = F.interpolate(spec[None, None].float(), size=size, mode="bilinear", align_corners=False)
        return out[0].numpy()  # (1, S, S)

    def _frame(self, clip: str) -> np.ndarray:
        path = self._video_path(clip)
        if self.video == "flv":
            frame = read_video_frame(path, self.frame_position)
            if frame is None:
                raise BrokenSample(clip, f"{path} has no decodable video frame", path)
        else:
            if not path.is_dir():
                raise DatasetError(f"cremad: missing frame folder {path}", path)
            frames = sorted(path.glob("*.jpg"))
            if not frames:
                raise BrokenSample(clip, f"{path} holds no .jpg frames", path)
            frame = read_image(frames[math.floor(self.frame_position * (len(frames) - 1))])
        return resize_hwc(frame, (self.image_size, self.image_size))

    def _decode(self, clip: str) -> tuple[np.ndarray, np.ndarray]:
        return self._spectrogram(clip), self._frame(clip)

    def decode_batch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        f = self.fields()
        audio = np.zeros((len(ids), *f["audio"].shape), np.float32)
        video = np.zeros((len(ids), *f["video"].shape), np.uint8)
        labels = np.empty(len(ids), np.int64)
        for i, clip in enumerate(ids):
            labels[i] = parse_clip(clip)
            if clip in self._zero:
                continue
            try:
                audio[i], video[i] = self._decode(clip)
            except BrokenSample as exc:  # only known-broken clips may be broken
                raise DatasetError(f"cremad: clip {clip} cannot be decoded: {exc.reason}", exc.path) from exc
        return {"audio": audio, "video": video, LABEL: labels}

    def make_data(self, splits: dict[str, Dataset], info: dict[str, Any]) -> MultimodalData:
        return MultimodalData(
            name=self.name,
            modalities=self.modalities,
            task=self.task,
            num_classes=len(self.classes),
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            encoders={
                "audio": EncoderSpec("resnet18", {"in_channels": 1}),
                "video": EncoderSpec("resnet18", {"in_channels": 3}),
            },
            default_metric=self.default_metric,
            info={"classes": list(EMOTIONS), **info},
        )


cremad = register_dataset("cremad", CremaD.describe())(
    dataset_factory(
        CremaD,
        "CREMA-D audio spectrogram + one video frame; see :mod:`miles_tune.data.cremad`.",
    )
)
