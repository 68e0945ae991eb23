"""Scores of generated answers against reference answers, correct for Chinese.

Every score is on a 0-100 scale (CIDEr-D too, multiplied by 100 as papers report it).
Chinese needs care: sacrebleu's default tokenizer sees a Chinese sentence as one word
(BLEU 0 on a perfect answer) and rouge-score's tokenizer drops CJK altogether, so BLEU
uses sacrebleu's ``zh`` tokenizer when the references are Chinese and ROUGE / CIDEr-D
cut Chinese into jieba words.

>>> summary, per_sample = score_answers(["一个环形图。"], ["一个环形图。"])
>>> summary["bleu"], summary["rouge_l"], summary["exact_match"]
(100.0, 100.0, 100.0)
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from typing import Any

from lab.dataset import guess_language

_CJK_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)")
_WORD = re.compile(r"[a-z0-9]+")
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.S)

# Names of the scores in the order tables show them.
TEXT_METRICS = ("bleu", "chrf", "rouge_1", "rouge_2", "rouge_l", "cider", "exact_match")
JSON_METRICS = ("json_valid", "json_key_f1")
BOX_METRICS = ("box_iou", "box_acc50")  # lab.box_answers.box_scores, for samples whose answer has boxes


# ---------------------------------------------------------------- tokenizing


def _jieba_cut(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces building its dictionary on first use
    return jieba.lcut(text)


def words(text: str) -> list[str]:
    """Lower-cased words: jieba words for Chinese runs, rouge-score's words for the rest.

    On text without CJK the result equals ``rouge_score.tokenize.tokenize(text, None)``.
    """
    tokens: list[str] = []
    for i, chunk in enumerate(_CJK_RUN.split(text.lower())):
        if i % 2:  # the split keeps the CJK runs at odd positions
            tokens.extend(w for w in _jieba_cut(chunk) if w.strip())
        else:
            tokens.extend(_WORD.findall(chunk))
    return tokens


class _Tokenizer:
    """The object rouge-score wants: anything with ``tokenize(text)``."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


def bleu_tokenizer(references: list[str]) -> str:
    """``"zh"`` when the references are mostly Chinese, else sacrebleu's default ``"13a"``."""
    return "zh" if guess_language(" ".join(references)) == "zh" else "13a"


# ---------------------------------------------------------------- the metrics


def normalise(text: str) -> str:
    """Strip and collapse whitespace: what exact match compares."""
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if normalise(prediction) == normalise(reference) else 0.0


def parse_json(text: str) -> Any:
    """The JSON value of a model's answer (a ```json fence is allowed), or ``None``."""
    match = _FENCE.match(text)
    body = match.group(1) if match else text
    try:
        return json.loads(body)
    except (json.JSONDecodeError, TypeError):
        return None


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Dotted key paths of a JSON value; list positions are dropped so the schema is compared."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= key_paths(child, path)
    elif isinstance(value, list):
        for child in value:
            paths |= key_paths(child, prefix)
    return paths


def json_key_f1(prediction: str, reference: str) -> float:
    """F1 (0-100) of the predicted key paths against the reference's; 0 for invalid JSON."""
    pred, ref = parse_json(prediction), parse_json(reference)
    if pred is None or ref is None:
        return 0.0
    pred_keys, ref_keys = key_paths(pred), key_paths(ref)
    if not pred_keys and not ref_keys:
        return 100.0 if pred == ref else 0.0
    common = len(pred_keys & ref_keys)
    if not common:
        return 0.0
    precision, recall = common / len(pred_keys), common / len(ref_keys)
    return 100.0 * 2 * precision * recall / (precision + recall)


def is_json_task(references: list[str]) -> bool:
    """Whether the answers are JSON: most references parse as an object or a list."""
    parsed = [parse_json(r) for r in references]
    return bool(references) and sum(isinstance(p, (dict, list)) for p in parsed) * 2 > len(references)


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (0-100) with the CJK-keeping tokenizer."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Tokenizer())
    scores = scorer.score(reference, prediction)  # rouge-score's order: (target, prediction)
    return {
        "rouge_1": 100.0 * scores["rouge1"].fmeasure,
        "rouge_2": 100.0 * scores["rouge2"].fmeasure,
        "rouge_l": 100.0 * scores["rougeL"].fmeasure,
    }


def _ngrams(tokens: list[str], n: int = 4) -> Counter:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider_d(predictions: list[str], references: list[list[str]], sigma: float = 6.0) -> list[float]:
    """CIDEr-D of each prediction (times 100), as in the coco-caption reference code.

    Document frequencies come from the references of this corpus, so a corpus of one
    sample scores 0 whatever the answer (log of one document is 0), as in the original.
    """
    refs = [[_ngrams(words(r)) for r in rs] for rs in references]
    tests = [_ngrams(words(p)) for p in predictions]
    df: Counter = Counter()
    for rs in refs:
        df.update(set(g for r in rs for g in r))
    log_docs = math.log(float(len(refs))) if refs else 0.0

    def vectorise(counts: Counter):
        vec: list[dict] = [{} for _ in range(4)]
        norm = [0.0] * 4
        for gram, tf in counts.items():
            weight = tf * (log_docs - math.log(max(1.0, df[gram])))
            vec[len(gram) - 1][gram] = weight
            norm[len(gram) - 1] += weight * weight
        # The reference code's "length" counts bigrams (its `n == 1` tests the 0-based order).
        length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for test, rs in zip(tests, refs):
        vec, norm, length = vectorise(test)
        total = 0.0
        for r in rs:
            vec_r, norm_r, length_r = vectorise(r)
            penalty = math.exp(-((length - length_r) ** 2) / (2 * sigma**2))
            for n in range(4):
                val = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec[n].items())
                if norm[n] and norm_r[n]:
                    val /= norm[n] * norm_r[n]
                total += val * penalty
        scores.append(100.0 * 10.0 * total / 4 / max(len(rs), 1))
    return scores


# ---------------------------------------------------------------- a whole set


def score_answers(
    predictions: list[str], references: list[str], targets: list | None = None
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Corpus scores and per-sample scores of ``predictions`` against ``references``.

    BLEU and chrF of the corpus are sacrebleu's corpus scores (not the mean of sentence
    scores); the others are means over the samples. JSON scores appear when the
    references are JSON; box scores (IoU, accuracy at IoU 0.5) for the samples whose
    ``targets`` entry is a :class:`lab.box_answers.BoxTarget`, averaged over those samples.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not references:
        return {}, []
    tokenize = bleu_tokenizer(references)
    bleu, sentence_bleu, chrf = BLEU(tokenize=tokenize), BLEU(tokenize=tokenize, effective_order=True), CHRF()
    json_task = is_json_task(references)
    ciders = cider_d(predictions, [[r] for r in references])
    per_sample = []
    for pred, ref, cider in zip(predictions, references, ciders):
        scores = {
            "bleu": sentence_bleu.sentence_score(pred, [ref]).score,
            "chrf": chrf.sentence_score(pred, [ref]).score,
            **rouge_scores(pred, ref),
            "cider": cider,
            "exact_match": exact_match(pred, ref),
        }
        if json_task:
            scores["json_valid"] = 100.0 if parse_json(pred) is not None else 0.0
            scores["json_key_f1"] = json_key_f1(pred, ref)
        target = targets[len(per_sample)] if targets else None
        if target is not None:
            scores.update(target.scores(pred))
        per_sample.append({k: round(v, 4) for k, v in scores.items()})
    names = dict.fromkeys(name for s in per_sample for name in s)
    summary = {name: _mean([s[name] for s in per_sample if name in s]) for name in names}
    summary["bleu"] = bleu.corpus_score(predictions, [references]).score
    summary["chrf"] = chrf.corpus_score(predictions, [references]).score
    return {k: round(v, 4) for k, v in summary.items()}, per_sample


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def metric_names(summary: dict[str, float]) -> list[str]:
    """The metrics of a summary in display order."""
    return [m for m in TEXT_METRICS + JSON_METRICS + BOX_METRICS if m in summary]
