"""What an export wrote, and what the receiving tool needs to find its images.

Every export writes image paths relative to its folder (``openai`` embeds the images). Each
tool resolves them its own way:

- LLaMA-Factory: against ``media_dir``, which defaults to ``dataset_dir``, the folder of
  ``dataset_info.json``: ``--dataset_dir <folder>`` is all it needs.
- ``datasets``' imagefolder: against the folder of ``metadata.jsonl``.
- ms-swift: against the folder it runs in, then ``ROOT_IMAGE_DIR`` (``swift/template/vision_utils.py``,
  ``_check_path``, images and videos alike), so ``ROOT_IMAGE_DIR=<folder>`` lets ``swift sft`` run
  from anywhere. The same holds for our own dataset folders, which are in ms-swift's format.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lab.formats.openai_rules import CONVERSIONS, conversion_note
from lab.text import Msg, join


@dataclass
class ExportSummary:
    """One export: its main file, format, record count, and (``openai``) the images converted, by kind."""

    main_file: Path
    fmt: str
    records: int
    converted: Counter = field(default_factory=Counter)
    download: bool = False  # zipped for a visitor: the tool will read it where the zip is unpacked

    def summary(self) -> Msg:
        """What was written, each conversion counted, and how the tool finds the images."""
        lines = [Msg("Exported {n} record(s) as {fmt} to {path}.", n=self.records, fmt=self.fmt, path=self.main_file)]
        lines += [conversion_note(kind, self.converted[kind]) for kind in CONVERSIONS if self.converted[kind]]
        folder = Msg("the folder you unzip it into") if self.download else self.main_file.parent.resolve()
        hint = tool_hint(self.fmt, folder)
        return join("\n", lines + ([hint] if hint else []))


def tool_hint(fmt: str, folder: Path | Msg) -> Msg | None:
    """How the tool that reads ``fmt`` finds the images of the export in ``folder``."""
    if fmt == "swift":
        return Msg(
            "ms-swift reads image paths relative to the folder it runs in: set ROOT_IMAGE_DIR to {folder} "
            "to run swift sft from anywhere.",
            folder=folder,
        )
    if fmt == "llamafactory":
        return Msg("LLaMA-Factory: set dataset_dir to {folder}; image paths are relative to it.", folder=folder)
    if fmt == "imagefolder":
        return Msg('datasets: load_dataset("imagefolder") with data_dir set to {folder}.', folder=folder)
    return None
