"""What every tab gets: the app's settings and the one model handle."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.handle import DEMO_MODEL, ModelHandle


@dataclass
class AppSettings:
    model: str = DEMO_MODEL  # loaded at start; "demo" is the tiny offline model, "" loads nothing
    host: str = "127.0.0.1"
    port: int | None = None  # None: Gradio picks (7860 or the next free one)
    share: bool = False
    lang: str | None = None  # None: follow the browser
    workspace: str | None = None
    trust_remote_code: bool = False  # the model loaded at start may run its own Python code


@dataclass
class UIContext:
    settings: AppSettings
    handle: ModelHandle = field(default_factory=ModelHandle)
    forms: dict = field(default_factory=dict)  # forms a later tab follows (the labeler chosen in Prompt design)
