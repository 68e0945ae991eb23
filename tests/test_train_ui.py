"""The Train tab through its API (gradio_client): start, live metrics, busy model, stop, re-attach, runs list."""

from __future__ import annotations

import time

import pytest

from lab.train_config import TrainConfig
from lab.training import job as jobs
from lab.ui.train_tab import FORM_FIELDS, form_values


def _wait_ready(ctx, timeout=120):
    deadline = time.time() + timeout
    while ctx.handle.state.value == "loading" and time.time() < deadline:
        time.sleep(0.2)
    assert ctx.handle.state.value == "ready", ctx.handle.describe()


def _plot_rows(plot) -> list:
    value = plot.get("value", plot) if isinstance(plot, dict) else plot
    return value.get("data", []) if isinstance(value, dict) else []


def test_train_tab_start_poll_stop_and_reattach(launch_app, lab_home):
    from gradio_client import Client

    from lab.errors import BusyError

    app, ctx, client = launch_app(model="demo")
    _wait_ready(ctx)
    cfg = TrainConfig.from_preset("cpu_demo", ["max_steps=300", "run_name=ui", "eval_steps=1000"])
    form = dict(zip(FORM_FIELDS, form_values(cfg)))

    shown = client.predict(preset="cpu_demo", **form, api_name="/train_command")
    assert shown["visible"] is True and shown["value"].startswith("python -m lab train --preset cpu_demo --set")
    message = client.predict(**form, api_name="/train_start")
    assert message == "Started ui."
    deadline, status, loss = time.time() + 120, "", []
    while time.time() < deadline:
        bar, status, loss_plot, lr_plot, score_plot, log, rewards = client.predict(None, api_name="/train_poll")
        loss = _plot_rows(loss_plot)
        if loss:
            break
        time.sleep(0.5)
    assert loss and "**ui** · running" in status and "<progress" in bar, status
    assert rewards["visible"] is False  # the reward plot is a GRPO run's
    # While it trains, the model is busy for everyone else, and a second run is refused.
    assert ctx.handle.state.value == "training"
    with pytest.raises(BusyError, match="training run"):
        with ctx.handle.use():
            pass
    with pytest.raises(Exception, match="already going on"):
        client.predict(**form, api_name="/train_start")
    # A reloaded page (a new session) finds the same run.
    again = Client(app.local_url, verbose=False).predict(None, api_name="/train_poll")
    assert "**ui**" in again[1]

    assert client.predict(api_name="/train_stop") == "Stopping ui after the current step…"
    job = jobs.current_job()
    assert job.wait(120) and job.status == "stopped", job.message
    bar, status, loss_plot, _, _, _, _ = client.predict(None, api_name="/train_poll")
    assert "stopped" in status and len(_plot_rows(loss_plot)) >= len(loss)
    # The trained adapter stays on the model, under the run's name, for Evaluate and Chat.
    assert ctx.handle.state.value == "ready" and ctx.handle.loaded.adapter == "ui"
    assert "ui" in ctx.handle.loaded.model.peft_config and "default" not in ctx.handle.loaded.model.peft_config
    table, _ = client.predict(api_name="/train_runs")
    rows = table["data"] if isinstance(table, dict) else table
    assert rows[0][0] == "ui" and rows[0][1] == "stopped"
    assert client.predict(api_name="/train_stop") == "No training run is going on."


def test_the_first_plot_data_is_typed_and_names_every_series():
    """The browser builds a plot from its first data only: types and series colours must be right from the start."""
    import gradio as gr

    from lab.ui.train_progress import plot_points, status_outputs

    assert status_outputs(None)[2:] == (None, None, None)  # idle: an empty plot, not an untyped empty frame
    assert plot_points([]) is None
    plot = gr.LinePlot(x="step", y="value", color="series")
    first = plot.postprocess(plot_points([{"step": 1, "value": 8.1, "series": "train"}], ("train", "eval")))
    assert first.datatypes == {"step": "quantitative", "value": "quantitative", "series": "nominal"}
    assert first.data == [[1, 8.1, "train"], [1, None, "eval"]]  # eval named before its first point, not drawn


@pytest.fixture
def no_run_left():
    """Stop whatever training a test leaves going (the job is the process's, not the app's), queued runs too."""
    yield
    for _ in range(5):  # the run going on, then each queued one as it starts
        job = jobs.current_job()
        if job is None or not job.active:
            break
        job.stop()
        job.wait(120)


def _wait_for_steps(run_dir, job, timeout=120):
    from lab.training.metrics import log_rows, read_metrics

    deadline = time.time() + timeout
    while job.active and not log_rows(read_metrics(run_dir)) and time.time() < deadline:
        time.sleep(0.2)
    assert log_rows(read_metrics(run_dir)), job.message


def test_a_grpo_run_shows_its_settings_and_draws_reward_kl_and_loss(launch_app, lab_home, no_run_left):
    app, ctx, client = launch_app(model="demo")
    _wait_ready(ctx)
    # The trainer's choice shows GRPO's settings, from rewards to target_length.
    assert [u["visible"] for u in client.predict("grpo", api_name="/train_trainer")] == [True] * 9
    assert [u["visible"] for u in client.predict("sft", api_name="/train_trainer")] == [False] * 9
    cfg = TrainConfig.from_preset(
        "grpo_json",
        [
            "model=demo",
            "max_steps=3",
            "num_generations=2",
            "max_new_tokens=4",
            "per_device_batch_size=1",
            "gradient_accumulation_steps=1",
            "gradient_checkpointing=false",
            "rewards=[length, json_valid]",
            "run_name=rl",
        ],
    )
    form = dict(zip(FORM_FIELDS, form_values(cfg)))
    assert client.predict(**form, api_name="/train_start") == "Started rl."
    job = jobs.current_job()
    assert job.wait(120) and job.status == "finished", job.message
    bar, status, loss_plot, lr_plot, _, log, rewards = client.predict(None, api_name="/train_poll")
    assert "**rl** · finished · step 3/3" in status and rewards["visible"] is True
    assert {row[2] for row in _plot_rows(rewards)} == {"reward", "length", "json_valid"}
    assert {row[2] for row in _plot_rows(loss_plot)} == {"train", "kl"} and _plot_rows(lr_plot)
    # Like an SFT run, it leaves its adapter on the model for Evaluate and Chat.
    assert ctx.handle.state.value == "ready" and ctx.handle.loaded.adapter == "rl"


def test_a_second_visitor_cannot_take_a_run_name_in_use(launch_app, lab_home, monkeypatch, no_run_left):
    from gradio_client import Client

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")  # a shared deployment: later runs wait in a queue
    app, ctx, client = launch_app(model="demo")
    _wait_ready(ctx)
    form = dict(zip(FORM_FIELDS, form_values(TrainConfig.from_preset("cpu_demo", ["max_steps=300", "run_name=ui"]))))
    assert client.predict(**form, api_name="/train_start") == "Started ui."
    first, run_dir = jobs.current_job(), lab_home / "checkpoints" / "ui"
    _wait_for_steps(run_dir, first)
    config, logged = (run_dir / "config.yaml").read_bytes(), (run_dir / "metrics.jsonl").read_text().splitlines()

    visitor = Client(app.local_url, verbose=False)
    theirs = {**form, "learning_rate": 0.5, "max_steps": 2}
    with pytest.raises(Exception, match="A run named ui is already going on or waiting in the queue; choose another"):
        visitor.predict(**theirs, api_name="/train_start")
    assert visitor.predict(**{**theirs, "run_name": "other"}, api_name="/train_start") == (
        "Queued other: 1 run(s) ahead; it starts when they end."
    )
    with pytest.raises(Exception, match="A run named other is already going on or waiting in the queue"):
        client.predict(**{**form, "run_name": "other"}, api_name="/train_start")
    assert (run_dir / "config.yaml").read_bytes() == config
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[: len(logged)] == logged
    assert not (lab_home / "checkpoints" / "other").exists()

    assert client.predict(api_name="/train_stop") == "Stopping ui after the current step…"
    assert first.wait(120) and first.status == "stopped", first.message
    queued = jobs.current_job()
    assert queued.name == "other" and queued.wait(120) and queued.status == "finished", queued.message
    assert TrainConfig.from_yaml(lab_home / "checkpoints" / "other" / "config.yaml").learning_rate == 0.5
    assert (run_dir / "config.yaml").read_bytes() == config


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_model_loads(launch_app, lab_home, no_run_left):
    (lab_home / "checkpoints").write_text("a file where the runs folder should be")
    app, ctx, client = launch_app()
    before = jobs.current_job()
    form = dict(zip(FORM_FIELDS, form_values(TrainConfig.from_preset("cpu_demo", ["run_name=nowhere"]))))
    with pytest.raises(Exception) as refused:
        client.predict(**form, api_name="/train_start")
    assert str(refused.value).endswith(
        f"The run folder {lab_home / 'checkpoints' / 'nowhere'} cannot be written: "
        f"{lab_home / 'checkpoints'} is not a writable folder; choose another output_dir."
    )
    assert jobs.current_job() is before and ctx.handle.loaded is None and ctx.handle.state.value == "empty"


@pytest.mark.slow
def test_the_tab_trains_on_several_datasets_and_plots_the_answers_scores(launch_app, lab_home, no_run_left):
    import json

    import gradio as gr

    from lab.ui.train_tab import _form

    with gr.Blocks():  # the dataset widget: a multi-select of the datasets, a typed entry may carry a weight
        widget = _form(TrainConfig.from_preset("cpu_demo")).named("dataset")["dataset"]
    assert widget.multiselect and widget.allow_custom_value
    assert any(str(value).endswith("data/sample/data_json_en.jsonl") for _, value in widget.choices)

    app, ctx, client = launch_app(model="demo")
    _wait_ready(ctx)
    mix = ["data/sample/data_caption_zh.jsonl", "data/sample/data_json_en.jsonl:0.5"]
    cfg = TrainConfig.from_preset(
        "cpu_demo",
        [
            "max_steps=2",
            "eval_steps=1",
            "run_name=mixed",
            "eval_metrics=[rouge_l, json_valid]",
            "eval_samples=2",
            "eval_max_new_tokens=8",
        ],
    )
    form = {**dict(zip(FORM_FIELDS, form_values(cfg))), "dataset": mix}
    assert client.predict(**form, api_name="/train_start") == "Started mixed."
    job = jobs.current_job()
    assert job.wait(300) and job.status == "finished", job.message
    run_dir = lab_home / "checkpoints" / "mixed"
    assert TrainConfig.from_yaml(run_dir / "config.yaml").dataset == mix
    taken = {m["dataset"]: m["train"] for m in json.loads((run_dir / "data_mix.json").read_text())}
    assert taken["data/sample/data_json_en.jsonl"] == round(taken["data/sample/data_caption_zh.jsonl"] / 2)
    _, status, _, _, score_plot, _, _ = client.predict(None, api_name="/train_poll")
    assert {row[2] for row in _plot_rows(score_plot)} == {"rouge_l", "json_valid"}, status
