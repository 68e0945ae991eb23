"""On a ZeroGPU Space chat and evaluation run inside spaces.GPU; elsewhere they run as they are."""

import sys
import types

from lab.ui.zerogpu import gpu


def handler(request, text):
    yield f"answer to {text}"


def test_plain_machines_need_no_spaces_package(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert gpu(handler) is handler


def test_zero_gpu_wraps_with_spaces_gpu(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")

    def GPU(duration=60):
        def wrap(fn):
            def wrapped(*args, **kwargs):
                calls.append(duration)
                return fn(*args, **kwargs)

            return wrapped

        return wrap

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    wrapped = gpu(handler, duration=90)
    assert wrapped is not handler
    assert list(wrapped(None, "hi")) == ["answer to hi"] and calls == [90]


def test_the_chat_and_eval_handlers_are_wrapped(monkeypatch, launch_app):
    calls = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration=60: lambda fn: (calls.append(fn.__name__), fn)[1]
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    launch_app(model="")
    assert {"on_send", "on_run"} <= set(calls)
