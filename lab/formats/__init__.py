"""Moving datasets to and from other tools' formats (``fmt``).

- ``swift``: our own form (ms-swift ``messages`` + ``images``), ``data.jsonl``; import also reads
  ms-swift JSON lists, absolute image paths and the older ``query``/``response``/``history`` keys.
- ``llamafactory``: sharegpt ``data.json`` (``{"conversations": [{"from": "human", "value":
  "<image>..."}], "images": [...]}``, the system prompt as the first turn) + ``dataset_info.json``.
- ``imagefolder``: Hugging Face ``metadata.jsonl`` with ``file_name`` when every record has one
  image, else ``file_names`` on every row; plus ``id``, ``messages``, ``meta`` (a JSON string).
- ``openai``: chat fine-tuning ``chat.jsonl``; images become base64 ``data:`` URL content parts
  where their ``<image>`` placeholders were, converted where OpenAI's rules need it (RGB or RGBA;
  JPEG, PNG or WEBP; at most 10 MB: :mod:`lab.formats.openai_rules`).

Exports (:mod:`lab.formats.exporters`) copy images into ``out_dir/images/`` (``openai`` embeds
them) with relative paths; imports (:mod:`lab.formats.importers`) write a dataset folder of our
own form; :mod:`lab.formats.summary` says how each tool resolves those paths (ms-swift needs
``ROOT_IMAGE_DIR``). A round trip keeps every record, its messages, its image bytes, and its id wherever
the format has room for one (not ``openai``).
"""

from lab.formats.exporters import export_dataset, export_for_download, export_with_summary
from lab.formats.importers import detect_format, import_dataset
from lab.formats.layout import FORMATS, LLAMAFACTORY_TAGS

__all__ = [
    "FORMATS",
    "LLAMAFACTORY_TAGS",
    "detect_format",
    "export_dataset",
    "export_for_download",
    "export_with_summary",
    "import_dataset",
]
