"""Each metric against values worked out by hand or by the reference library on fixed strings."""

import json
import math

import pytest
from rouge_score import rouge_scorer, tokenize
from sacrebleu.metrics import BLEU, CHRF

from lab.evaluation.metrics import (
    bleu_tokenizer,
    cider_d,
    exact_match,
    is_json_task,
    json_key_f1,
    key_paths,
    parse_json,
    rouge_scores,
    score_answers,
    words,
)

ZH = "一个环形图，共3个扇区，最大的是蓝色，占70%。"
EN_PRED = ["A donut chart with 3 segments; the largest is red.", "A slider set to 40 percent."]
EN_REF = ["A donut chart with 3 segments; the largest is blue at 70%.", "A slider at 40%."]


def test_identical_chinese_strings_score_100():
    summary, per_sample = score_answers([ZH], [ZH])
    for name in ("bleu", "chrf", "rouge_1", "rouge_2", "rouge_l", "exact_match"):
        assert summary[name] == pytest.approx(100.0), name
        assert per_sample[0][name] == pytest.approx(100.0), name


def test_why_chinese_needs_its_own_tokenizers():
    # the reference libraries' defaults score a perfect Chinese answer 0
    assert BLEU().corpus_score([ZH], [[ZH]]).score == 0.0
    assert rouge_scorer.RougeScorer(["rouge1"]).score("一个环形图", "一个环形图")["rouge1"].fmeasure == 0.0
    assert bleu_tokenizer([ZH]) == "zh" and bleu_tokenizer(EN_REF) == "13a"


def test_bleu_and_chrf_equal_sacrebleu_corpus_scores():
    summary, per_sample = score_answers(EN_PRED, EN_REF)
    assert summary["bleu"] == pytest.approx(BLEU().corpus_score(EN_PRED, [EN_REF]).score, abs=1e-3)
    assert summary["chrf"] == pytest.approx(CHRF().corpus_score(EN_PRED, [EN_REF]).score, abs=1e-3)
    sentence = BLEU(effective_order=True).sentence_score(EN_PRED[1], [EN_REF[1]]).score
    assert per_sample[1]["bleu"] == pytest.approx(sentence, abs=1e-3)
    assert 0 < summary["bleu"] < 100


def test_chinese_bleu_uses_zh_tokenisation():
    pred, ref = "一个环形图，共3个扇区。", "一个环形图，共4个扇区。"
    summary, _ = score_answers([pred], [ref])
    assert summary["bleu"] == pytest.approx(BLEU(tokenize="zh").corpus_score([pred], [[ref]]).score, abs=1e-3)
    assert 0 < summary["bleu"] < 100


def test_words_match_rouge_score_on_english_and_keep_chinese():
    text = "A Donut-chart with 3 segments; the largest is BLUE at 70%."
    assert words(text) == tokenize.tokenize(text, None)
    assert words("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert words("用JSON描述UI组件") == ["用", "json", "描述", "ui", "组件"]


def test_rouge_equals_rouge_score_on_english():
    reference = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for pred, ref in zip(EN_PRED, EN_REF):
        ours = rouge_scores(pred, ref)
        theirs = reference.score(ref, pred)
        assert ours["rouge_1"] == pytest.approx(100 * theirs["rouge1"].fmeasure)
        assert ours["rouge_2"] == pytest.approx(100 * theirs["rouge2"].fmeasure)
        assert ours["rouge_l"] == pytest.approx(100 * theirs["rougeL"].fmeasure)


def test_rouge_on_chinese_by_hand():
    # prediction 我/爱/北京/天安门, reference 我/爱/北京
    scores = rouge_scores("我爱北京天安门", "我爱北京")
    assert scores["rouge_1"] == pytest.approx(100 * 2 * (3 / 4) * 1 / (3 / 4 + 1))  # P 3/4, R 1
    assert scores["rouge_2"] == pytest.approx(100 * 2 * (2 / 3) * 1 / (2 / 3 + 1))  # P 2/3, R 1
    assert scores["rouge_l"] == pytest.approx(scores["rouge_1"])


def test_cider_d_by_hand():
    # Two documents, so every n-gram seen in one reference has idf ln2 - ln1 = ln2, and an
    # n-gram seen in none gets ln2 too (df is floored at 1).
    scores = cider_d(["a b", "c d e"], [["a b"], ["c d"]])
    assert scores[0] == pytest.approx(100 * 10 * (1 + 1) / 4)  # unigram and bigram cosines are 1
    unigram = 2 / math.sqrt(6)  # c, d shared: 2 ln2^2 / (sqrt3 ln2 * sqrt2 ln2)
    bigram = 1 / math.sqrt(2)  # (c, d) shared: ln2^2 / (sqrt2 ln2 * ln2)
    penalty = math.exp(-(1**2) / (2 * 6.0**2))  # 2 bigrams against 1
    assert scores[1] == pytest.approx(100 * 10 * (unigram + bigram) * penalty / 4)


def test_cider_d_of_one_document_is_zero():
    assert cider_d(["a b c"], [["a b c"]]) == [0.0]


def test_exact_match_ignores_surrounding_and_repeated_whitespace():
    assert exact_match("  a  b\n", "a b") == 100.0
    assert exact_match("a b.", "a b") == 0.0


def test_json_parsing_key_paths_and_key_f1():
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json("not json") is None
    ref = '{"组件名": "x", "功能": [{"描述": "d", "细节": ["e"]}]}'
    assert key_paths(json.loads(ref)) == {"组件名", "功能", "功能.描述", "功能.细节"}
    assert json_key_f1(ref, ref) == 100.0
    # predicted {组件名, 功能}: precision 1, recall 2/4
    assert json_key_f1('{"组件名": "y", "功能": []}', ref) == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    assert json_key_f1("{broken", ref) == 0.0


def test_json_scores_appear_only_for_json_references():
    ref = '{"component": "slider", "functions": []}'
    summary, per_sample = score_answers([ref, "oops"], [ref, ref])
    assert summary["json_valid"] == 50.0 and summary["json_key_f1"] == 50.0
    assert per_sample[1]["json_valid"] == 0.0
    assert "json_valid" not in score_answers(EN_PRED, EN_REF)[0]
    assert is_json_task([ref]) and not is_json_task(EN_REF)


def test_sample_dataset_answers_against_themselves(sample_dataset):
    from lab.dataset import load_records

    refs = [r["messages"][-1]["content"] for r in load_records(sample_dataset / "data_json_zh.jsonl")][:10]
    summary, _ = score_answers(refs, refs)
    for name in ("bleu", "chrf", "rouge_l", "exact_match", "json_valid", "json_key_f1"):
        assert summary[name] == pytest.approx(100.0), name
    assert summary["cider"] > 0
    shuffled = refs[1:] + refs[:1]
    worse, _ = score_answers(shuffled, refs)
    assert worse["bleu"] < 100 and worse["exact_match"] == 0 and worse["json_key_f1"] == 100.0
