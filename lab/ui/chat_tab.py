"""Chat tab: talk to the loaded model with images, streamed, with the adapter on, off, or both.

The conversation of each browser tab lives in its own ``gr.State`` (the core's history
of turns, see :mod:`lab.chat`); the chatbots only render it. In compare mode the same
message is answered twice, adapter off (left) and on (right), each side continuing
its own conversation.
"""

from __future__ import annotations

import itertools
import threading

import gradio as gr

from lab.chat import ChatSettings, assistant_turn, stream_compare, stream_reply, user_turn
from lab.errors import localize
from lab.text import Msg
from lab.ui import i18n
from lab.ui.forms import Form, read_values
from lab.ui.i18n import t
from lab.ui.zerogpu import gpu
from lab.uploads import check_file

# Shown for an answer that ended before its first word (the history keeps it empty, as the model gave it).
NO_ANSWER = Msg("(no answer: the model ended its reply at once)")


def render(history: list[dict], lang: str = "en", live: str | None = None) -> list[dict]:
    """Chatbot messages for a history: a user turn's images first, then its text; ``live`` is an answer
    still streaming after it. A finished answer without text says so instead of showing an empty bubble."""
    messages = []
    for turn in history:
        content: list = [{"path": path} for path in turn.get("images") or []]
        text = turn.get("text") or ""
        if turn["role"] == "assistant" and not text.strip():
            text = localize(NO_ANSWER, lang)
        if text or not content:
            content.append(text)
        messages.append({"role": turn["role"], "content": content if len(content) > 1 else content[0]})
    if live is not None:
        messages.append({"role": "assistant", "content": live})
    return messages


def _first(stream):
    """Run a stream up to its first value, so a busy model is reported before anything is shown."""
    try:
        return next(stream), stream
    except StopIteration:
        return None, iter(())


def respond(ctx, message, history, history_off, values: dict, adapter_on, compare, lang: str = "en"):
    """Generator behind the send box: yields (stop, chatbot, chatbot_off, history, history_off, textbox).

    ``values``: the settings form's values by field name. A LabError (no model, a busy one, a bad
    image, a bad setting) ends it; the handler shows its sentence.
    """
    settings = read_values(ChatSettings, values)
    files = [check_file(f) for f in (message or {}).get("files") or []]
    turn = user_turn((message or {}).get("text", ""), files)
    stop = threading.Event()
    history = list(history or []) + [turn]
    history_off = list(history_off or []) + ([turn] if compare else [])
    if compare:
        stream = stream_compare(ctx.handle, history_off, history, settings, stop=stop)
    else:
        stream = (
            ("", text) for text in stream_reply(ctx.handle, history, settings, adapter=bool(adapter_on), stop=stop)
        )
    first, stream = _first(stream)
    off, on = first if first is not None else ("", "")
    cleared = gr.MultimodalTextbox(value=None)

    def shown(off: str, on: str):
        return render(history, lang, live=on), render(history_off, lang, live=off if compare else None)

    try:
        for off, on in itertools.chain([(off, on)], stream):  # noqa: B020  (after the loop: the last answers)
            yield stop, *shown(off, on), history, history_off, cleared
    except Exception:
        # The answer broke off: the conversation is as it was and the message is back in the box, to send again.
        before, before_off = history[:-1], history_off[:-1] if compare else history_off
        yield (
            None,
            render(before, lang),
            render(before_off, lang),
            before,
            before_off,
            gr.MultimodalTextbox(value=message),
        )
        raise
    finally:
        stop.set()  # also reached when the page goes away: the model stops after its next token
    history.append(assistant_turn(on))
    if compare:
        history_off.append(assistant_turn(off))
    yield None, render(history, lang), render(history_off, lang), history, history_off, cleared


def create_tab(ctx) -> None:
    history = gr.State([])
    history_off = gr.State([])
    stop_state = gr.State(None)
    form = Form(ChatSettings)
    form.add("system", lines=1)
    with gr.Accordion(t("Generation settings"), open=False):
        form.row("temperature", "top_p", "max_new_tokens")
    with gr.Row():
        adapter_on = gr.Checkbox(value=True, label=t("Answer with the fine-tuned adapter"))
        compare = gr.Checkbox(value=False, label=t("Compare: adapter off | on"))
    with gr.Row():
        chatbot_off = gr.Chatbot(label=t("Adapter off (base model)"), visible=False, height=480)
        chatbot = gr.Chatbot(label=t("Chat"), height=480)
    textbox = gr.MultimodalTextbox(
        file_types=["image"],
        file_count="multiple",
        placeholder=None,
        label=t("Message; add one or more images"),
        submit_btn=True,
    )
    with gr.Row():
        stop_btn = gr.Button(t("Stop"), variant="stop")
        clear_btn = gr.Button(t("Clear"))

    def on_send(message, chat, chat_off, adapter, compare, *, lang, **settings):
        yield from respond(ctx, message, chat, chat_off, settings, adapter, compare, lang)

    def on_compare(both):
        label = t("Adapter on (fine-tuned)") if both else t("Chat")
        return gr.update(visible=bool(both)), gr.update(label=label)

    def on_stop(stop, lang):
        if stop is not None:
            stop.set()
        gr.Info(localize(Msg("Stopping…"), lang))

    # The API's parameters, in this order: message, the settings, adapter, compare.
    inputs = {
        "message": textbox,
        "chat": history,
        "chat_off": history_off,
        **form.named(),
        "adapter": adapter_on,
        "compare": compare,
    }
    outputs = [stop_state, chatbot, chatbot_off, history, history_off, textbox]
    textbox.submit(gpu(i18n.handler(ctx, on_send)), None, outputs, api_name="chat", inputs_kwargs=inputs)
    stop_btn.click(i18n.handler(ctx, on_stop), stop_state, None, api_name="chat_stop")
    clear_btn.click(
        lambda: ([], [], [], [], None),
        None,
        [chatbot, chatbot_off, history, history_off, stop_state],
        api_name="chat_clear",
    )
    compare.change(on_compare, compare, [chatbot_off, chatbot], api_name="chat_compare_mode")
