"""The one background-job model: states, stop, failures as one sentence, progress, log tail, the queue."""

from __future__ import annotations

import logging
import threading

import pytest

from lab.errors import ConfigError, ModelLoadError, localize
from lab.jobs import LOG_LINES, STATE_NAMES, Job, JobQueue, JobState, start_job, unexpected_failure
from lab.text import Msg, catalog

THING = Msg("Training")  # what the work is, as the subject of a sentence


def _job(name: str = "thing") -> Job:
    return Job(name, THING)


def test_states_move_queued_starting_running_finished_and_the_line_moves_on():
    release = {"first": threading.Event(), "second": threading.Event()}
    seen: dict[str, list[JobState]] = {"first": [], "second": []}

    def work(job: Job) -> str:
        seen[job.name].append(job.state)
        job.mark_running()
        seen[job.name].append(job.state)
        release[job.name].wait()
        return f"{job.name} done"

    line = JobQueue()
    first = line.submit(_job("first"), work)
    second = line.submit(_job("second"), work)
    assert second.state is JobState.QUEUED and line.position(second) == 1 and line.position(first) == 0
    assert line.jobs() == [first, second] and line.current is first and line.busy()
    release["first"].set()
    assert first.wait(30) and first.state is JobState.FINISHED and first.result == "first done"
    assert line.current is second  # started as the first one ended
    release["second"].set()
    assert second.wait(30) and second.state is JobState.FINISHED and not line.busy()
    assert seen == {"first": [JobState.STARTING, JobState.RUNNING], "second": [JobState.STARTING, JobState.RUNNING]}
    assert first.ended >= first.started and str(first.message) == "" and not first.active


def test_stop_is_honoured_and_a_queued_job_leaves_the_line_without_running():
    ran: list[str] = []

    def work(job: Job) -> None:
        ran.append(job.name)
        job.mark_running()
        job.stop_event.wait()  # the work checks the stop request and ends early

    line = JobQueue()
    going, waiting = line.submit(_job("going"), work), line.submit(_job("waiting"), work)
    waiting.stop()
    assert waiting.state is JobState.STOPPED and waiting.wait(0) and line.position(waiting) == 0
    assert str(waiting.message) == "removed from the queue before it started"
    assert localize(waiting.message, "zh") == "开始前已从队列中移除"
    going.stop()
    assert going.state in (JobState.STOPPING, JobState.STOPPED)
    assert going.wait(30) and going.state is JobState.STOPPED and ran == ["going"]
    assert line.current is going  # nothing was left to start


def test_a_job_asked_to_stop_before_it_runs_stays_stopping():
    go = threading.Event()
    phases: list[JobState] = []

    def work(job: Job) -> None:
        go.wait()
        job.set_phase(JobState.LOADING)
        phases.append(job.state)
        job.mark_running()
        phases.append(job.state)

    job = start_job(work, _job())
    job.stop()
    go.set()
    assert job.wait(30) and phases == [JobState.STOPPING, JobState.STOPPING] and job.state is JobState.STOPPED


def test_an_unexpected_error_is_one_sentence_in_both_languages_and_the_traceback_goes_to_the_log(caplog):
    def work(job: Job) -> None:
        job.mark_running()
        raise KeyError("the_key")

    with caplog.at_level(logging.ERROR, logger="lab.jobs"):
        job = start_job(work, _job())
        assert job.wait(30)
    assert job.state is JobState.FAILED and not job.active
    assert str(job.message) == "Training failed: KeyError: 'the_key'"
    assert localize(job.message, "zh") == "训练失败：KeyError: 'the_key'"
    for text in (str(job.message), localize(job.message, "zh")):
        assert "\n" not in text and "Traceback" not in text and 'File "' not in text
    assert job.log_tail()[-1] == str(job.message)  # the log ends with the outcome
    logged = [r for r in caplog.records if r.name == "lab.jobs"]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is KeyError  # the traceback, for the server log


def test_only_the_first_line_of_an_error_is_shown():
    many_lines = RuntimeError("first line\n  second line\nthird")
    assert str(unexpected_failure(THING, many_lines)) == "Training failed: RuntimeError: first line"
    assert str(unexpected_failure(THING, ValueError())) == "Training failed: ValueError"
    assert localize(unexpected_failure(THING, ValueError("x" * 1000)), "zh") == f"训练失败：ValueError: {'x' * 300}"


def test_a_lab_error_keeps_its_own_sentence():
    def work(job: Job) -> None:
        raise ConfigError("{path} has no records.", path="d.jsonl")

    job = start_job(work, _job())
    assert job.wait(30) and job.state is JobState.FAILED
    assert str(job.message) == "d.jsonl has no records." and localize(job.message, "zh") == "d.jsonl 中没有样本。"


def test_progress_fraction_rate_and_eta():
    def work(job: Job) -> None:
        assert job.fraction is None and job.remaining is None and job.rate == 0 and job.eta_s is None
        job.mark_running()
        job.report(3, 10)

    job = start_job(work, _job())
    assert job.wait(30) and job.state is JobState.FINISHED
    assert (job.done, job.total, job.remaining, job.fraction) == (3, 10, 7, 0.3)
    frozen = job.elapsed_s
    assert frozen > 0 and job.elapsed_s == frozen  # the clock stopped when the job ended
    assert job.rate == pytest.approx(3 / job.elapsed_s) and job.eta_s == pytest.approx(7 / job.rate)
    job.report(4, 10, eta_s=12.5)  # the work's own estimate wins
    assert job.eta_s == 12.5
    snap = job.snapshot()
    assert (snap["state"], snap["done"], snap["total"], snap["fraction"], snap["eta_s"]) == (
        "finished",
        4,
        10,
        0.4,
        12.5,
    )
    assert localize(snap["label"], "zh") == "已完成"


def test_the_log_keeps_a_bounded_tail():
    job = _job()
    for i in range(LOG_LINES + 50):
        job.log(f"line {i}")
    tail = job.log_tail()
    assert len(tail) == LOG_LINES and tail[0] == "line 50" and tail[-1] == f"line {LOG_LINES + 49}"
    assert job.log_tail(2) == [f"line {LOG_LINES + 48}", f"line {LOG_LINES + 49}"] and job.log_tail(0) == []


def test_each_state_has_its_word_from_the_catalog_and_running_is_one_word():
    for state in JobState:
        assert str(state.label) == state.value == str(state) == f"{state}" and JobState(state.value) is state
        assert state.label is STATE_NAMES[state] and catalog("zh")[state.value] == localize(state.label, "zh")
    assert localize(JobState.RUNNING.label, "zh") == "运行中"
    assert len({localize(state.label, "zh") for state in JobState}) == len(JobState)
    assert {s for s in JobState if s.active} == {
        JobState.QUEUED,
        JobState.STARTING,
        JobState.LOADING,
        JobState.RUNNING,
        JobState.STOPPING,
    }


def test_the_tabs_keep_no_table_of_state_words():
    import re
    from pathlib import Path

    lab = Path(__file__).resolve().parents[1] / "lab"
    for path in lab.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"[\"']\w+\.state\.\w+[\"']", source), f"{path.name} keeps i18n keys for states"
        assert not re.search(r"_STAT(E|ES|US)_ZH", source), f"{path.name} keeps a table of Chinese state words"


def test_a_background_model_load_is_a_job_and_its_failure_reaches_the_header(tmp_path, monkeypatch):
    from lab.handle import ModelHandle

    handle = ModelHandle()
    with pytest.raises(ModelLoadError) as refused:  # a folder that is not there is refused at once, not in a job
        handle.load_in_background(str(tmp_path / "nowhere"))
    assert str(refused.value) == f"Model folder {tmp_path / 'nowhere'} does not exist."
    assert handle.describe()["error"] is None  # the one who asked got the sentence; the header stays as it was

    def broken(*args, **kwargs):
        raise RuntimeError("loader exploded\nwith details")

    monkeypatch.setattr(handle, "load_model_or_run", broken)
    job = handle.load_in_background("demo")
    assert job.wait(60) and job.state is JobState.FAILED
    assert str(job.message) == "Loading the model failed: RuntimeError: loader exploded"
    assert str(handle.describe()["error"]) == str(job.message)
    assert localize(handle.describe()["error"], "zh") == "加载模型失败：RuntimeError: loader exploded"
    assert handle.state.value == "empty"


def test_an_evaluation_job_reports_progress_and_stops():
    from lab.evaluation.runner import start_evaluation

    answered = threading.Event()

    def evaluate(progress, stop):
        progress(1, 4, 9.0)
        answered.set()
        stop.wait()
        return "result after 1 of 4"

    job = start_evaluation(evaluate)
    assert answered.wait(30) and (job.done, job.total, job.eta_s) == (1, 4, 9.0)
    job.stop()
    assert job.wait(30) and job.state is JobState.STOPPED and job.result == "result after 1 of 4"

    def broken(progress, stop):
        raise ZeroDivisionError("division by zero")

    job = start_evaluation(broken)
    assert job.wait(30) and str(job.message) == "Evaluation failed: ZeroDivisionError: division by zero"
    assert localize(job.message, "zh") == "评估失败：ZeroDivisionError: division by zero"


def test_the_train_and_labeling_tabs_show_the_same_state_words(tmp_path):
    from lab.labeling.batch import LabelRun
    from lab.training.metrics import append_metrics
    from lab.ui.labeling_tab import progress_markdown
    from lab.ui.train_progress import status_outputs

    run_dir = tmp_path / "a-run"
    append_metrics(run_dir, {"event": "start", "step": 0, "total_steps": 10, "time": 1.0})
    label_run = LabelRun(tmp_path / "labels")
    label_run.mark_running()
    for lang, running in (("en", "running"), ("zh", "运行中")):
        assert f" · {running} · " in status_outputs(run_dir, lang)[1]
        assert (
            progress_markdown(label_run.snapshot(), lang)
            .split("  \n")[1]
            .startswith(f"{running}：" if lang == "zh" else f"{running}:")
        )
    label_run.fail(Msg("The image folder {path} does not exist.", path="pics"))
    assert progress_markdown(label_run.snapshot(), "zh").split("  \n")[1].startswith("失败：")
    append_metrics(run_dir, {"event": "error", "time": 2.0, "message": "x"})
    assert " · 失败 · " in status_outputs(run_dir, "zh")[1]
