"""GRPO's rewards: each built-in on hand examples (Chinese too), weights, and a person's own reward file checked
before a run starts, with one sentence per problem."""

from __future__ import annotations

import pytest

from lab.errors import ConfigError, LabError, localize
from lab.train_config import TrainConfig
from lab.training.rewards import Reward, built_in, load_rewards, parse_rewards, score


def reward(name: str, **settings):
    return built_in(name, TrainConfig(**settings))


def test_json_valid_wants_json_of_the_references_kind():
    fn = reward("json_valid")
    answers = ['{"a": 1}', '```json\n{"a": 1}\n```', "3", '{"a": ', "[1, 2]", '{"标签": "猫"}']
    assert fn(answers, ['{"a": 2}'] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    # Against a reference that is not JSON, any valid JSON will do; against a list, a list.
    assert fn(["3", "[1]", '{"a": 1}'], ["a cat", "[2]", "[2]"]) == [1.0, 1.0, 0.0]


def test_json_key_f1_and_exact_match_are_the_evaluators_on_a_0_to_1_scale():
    f1 = reward("json_key_f1")
    assert f1(['{"a": 1, "b": 2}', '{"a": 1}', "oops"], ['{"a": 0}', '{"a": {"b": 1}}', '{"a": 0}']) == pytest.approx(
        [2 / 3, 2 / 3, 0.0]
    )
    exact = reward("exact_match")
    assert exact(["A  cat.\n", "a cat.", "一只猫。"], ["A cat.", "A cat.", "一只猫。"]) == [1.0, 0.0, 1.0]


def test_bleu_and_rouge_l_cut_chinese_into_words():
    bleu, rouge = reward("bleu"), reward("rouge_l")
    assert bleu(
        ["一个环形图。", "the cat sat on the mat", "x"], ["一个环形图。", "the cat sat on the mat", "a dog"]
    ) == pytest.approx([1.0, 1.0, 0.0])
    # Without the zh tokenizer a Chinese sentence is one word, and a near miss would score 0.
    assert 0.5 < bleu(["这是一个蓝色的环形图。"], ["这是一个红色的环形图。"])[0] < 1.0
    # jieba: 一个/红色/的/环形/图 against 一个/蓝色/的/环形/图, 4 of 5 words in order.
    assert rouge(
        ["一个红色的环形图", "a red donut chart"], ["一个蓝色的环形图", "a blue donut chart"]
    ) == pytest.approx([0.8, 0.75])


def test_length_rewards_the_target_length_in_characters():
    fn = reward("length", target_length=10)
    assert fn(["x" * 10, "x" * 5, "x" * 20, "五个汉字呀", ""], [""] * 5) == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.0])


def test_format_wants_the_whole_answer_to_match():
    fn = reward("format", reward_pattern=r"\{.*\}")
    assert fn(['{"a":\n 1}', 'x{"a": 1}', "{}"], [""] * 3) == [1.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="The format reward needs reward_pattern"):
        TrainConfig(trainer="grpo", rewards=["format"])
    with pytest.raises(ConfigError, match="reward_pattern is not a regular expression"):
        TrainConfig(trainer="grpo", rewards=["format"], reward_pattern="(")


def test_weights_combine_the_rewards_into_one_total():
    cfg = TrainConfig(trainer="grpo", rewards=["json_valid", "length:0.5", "exact_match:-1"], target_length=8)
    totals, each = score(load_rewards(cfg), ['{"a": 1}', "not json"], ['{"a": 1}', "{}"])
    assert each == {"json_valid": [1.0, 0.0], "length": [1.0, 1.0], "exact_match": [1.0, 0.0]}
    assert totals == pytest.approx([1.0 + 0.5 - 1.0, 0.5])


def test_rewards_are_written_as_a_list_or_a_mapping_and_a_typo_is_one_sentence():
    assert TrainConfig(rewards={"json_valid": 1, "rougeL": 0.5}).rewards == ["json_valid:1", "rougeL:0.5"]
    specs = parse_rewards(["json_valid", "rougeL:0.5", "sub/mine.py:brevity:0.2"])
    assert [(s.name, s.weight, s.path, s.function) for s in specs] == [
        ("json_valid", 1.0, None, None),
        ("rouge_l", 0.5, None, None),
        ("mine:brevity", 0.2, "sub/mine.py", "brevity"),
    ]
    with pytest.raises(ConfigError) as err:
        TrainConfig(rewards=["jsn_valid"])
    assert str(err.value).startswith("rewards has 'jsn_valid' (did you mean 'json_valid'?); the built-in rewards are")
    assert "不是内置奖励" in localize(err.value, "zh")
    with pytest.raises(ConfigError, match="whose weight 'lots' is not a number"):
        TrainConfig(rewards=["bleu:lots"])
    with pytest.raises(ConfigError, match="rewards names 'rouge_l' twice"):
        TrainConfig(rewards=["rouge_l", "rougeL:2"])
    with pytest.raises(ConfigError, match="needs at least one reward"):
        TrainConfig(trainer="grpo", rewards=[])


# ---------------------------------------------------------------- a reward of one's own


GOOD = """
from dataclasses import dataclass


@dataclass
class Scale:
    top: float = 1.0


def brevity(completions, references, **kw):
    assert len(kw["prompts"]) == len(kw["images"]) == len(completions)
    return [Scale().top / (1 + len(c)) for c in completions]

not_a_function = 3

def too_few(completions, references, **kw):
    return [1.0]

def words(completions, references, **kw):
    return ["good" for c in completions]

def broken(completions, references, **kw):
    raise KeyError("score")
"""


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(GOOD, encoding="utf-8")
    return path


def test_a_good_reward_file_loads_and_scores(reward_file):
    cfg = TrainConfig(trainer="grpo", rewards=[f"{reward_file}:brevity:2", "json_valid"])
    rewards = load_rewards(cfg)
    assert [(r.name, r.weight) for r in rewards] == [("my_rewards:brevity", 2.0), ("json_valid", 1.0)]
    totals, each = score(rewards, ["abc", "{}"], ["", "{}"], prompts=["q", "q"], images=[[], []])
    assert each["my_rewards:brevity"] == [0.25, 1 / 3] and totals == pytest.approx([0.5, 2 / 3 + 1])


@pytest.mark.parametrize(
    ("entry", "sentence"),
    [
        ("missing.py:brevity", "Reward file missing.py not found."),
        ("{file}:nothing", "Reward file {file} has no function nothing."),
        ("{file}:not_a_function", "not_a_function in {file} is not a function."),
        (
            "{file}:too_few",
            "Reward function my_rewards:too_few must return a list of 2 numbers, one per answer; it returned [1.0].",
        ),
        (
            "{file}:words",
            "Reward function my_rewards:words must return a list of 2 numbers, one per answer; it returned "
            "['good', 'good'].",
        ),
        ("{file}:broken", "Reward function my_rewards:broken failed on a trial call: KeyError: 'score'"),
    ],
)
def test_a_reward_file_with_a_problem_is_refused_in_one_sentence(reward_file, entry, sentence):
    cfg = TrainConfig(trainer="grpo", rewards=[entry.format(file=reward_file)])
    with pytest.raises(ConfigError) as err:
        load_rewards(cfg)
    assert str(err.value) == sentence.format(file=reward_file)
    assert "\n" not in localize(err.value, "zh") and localize(err.value, "zh") != str(err.value)


def test_a_file_that_fails_to_import_is_one_sentence(tmp_path):
    (tmp_path / "bad.py").write_text("def f(:\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^Reward file .*bad.py cannot be loaded: SyntaxError"):
        load_rewards(TrainConfig(trainer="grpo", rewards=[f"{tmp_path / 'bad.py'}:f"]))


def test_a_reward_that_goes_wrong_mid_run_is_named():
    def flaky(completions, references, **kw):
        return [float("nan")] * len(completions)

    with pytest.raises(LabError, match=r"Reward function flaky must return a list of 1 numbers.*\[nan\]"):
        score([Reward("flaky", 1.0, flaky)], ["a"], ["b"])


def test_a_shared_deployment_refuses_reward_files_and_patterns_before_running_them(reward_file, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    for path in (reward_file, "/etc/nothing-here.py"):
        with pytest.raises(ConfigError) as err:
            load_rewards(TrainConfig(trainer="grpo", rewards=[f"{path}:brevity"]))
        assert str(err.value).startswith("This shared deployment accepts only the built-in rewards (json_valid, ")
    cfg = TrainConfig(trainer="grpo", rewards=["json_valid", "format"], reward_pattern="(a+)+$")
    with pytest.raises(ConfigError, match="does not run the format reward"):
        load_rewards(cfg)  # a pattern that backtracks for hours on "aaaa...b"
    assert [r.name for r in load_rewards(TrainConfig(trainer="grpo", rewards=["json_valid", "bleu"]))] == [
        "json_valid",
        "bleu",
    ]


def test_the_cli_refuses_a_broken_reward_file_before_loading_a_model(reward_file, capsys):
    from lab.cli import main

    code = main(["train", "--preset", "grpo_json", "--set", f"rewards=[{reward_file}:too_few]", "model=no/such-model"])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: Reward function my_rewards:too_few must return a list of 2 numbers, "
        "one per answer; it returned [1.0].\n"
    )
