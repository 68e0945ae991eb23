"""The price table, token estimates and run estimates."""

import pytest

from lab.errors import ConfigError
from lab.labeling import costs
from lab.labeling.costs import Price, estimate_run, image_tokens, load_price_table, price_for, text_tokens


def test_bundled_price_table_loads_and_prices_every_entry():
    table = load_price_table()
    assert {"gpt-4o", "gpt-4o-mini", "qwen-vl-max*"} <= set(table)
    for price in table.values():
        assert price.input >= 0 and price.output >= 0
        image_tokens(1024, 768, price.image)  # every image rule is usable


def test_price_lookup_exact_then_longest_pattern():
    table = load_price_table()
    assert price_for("gpt-4o", table).input == 2.5
    assert price_for("gpt-5-mini-2026-01-01", table).model == "gpt-5-mini*"
    assert price_for("gpt-5.1", table).model == "gpt-5*"
    assert price_for("qwen-vl-max-latest", table).model == "qwen-vl-max*"
    assert price_for("my-local-model", table) is None


def test_user_prices_win_and_unknown_keys_are_refused(lab_home):
    user = lab_home / "presets" / "prices.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("models:\n  gpt-4o: {input: 1.0, output: 2.0}\n  fake-vl: {input: 0, output: 0}\n")
    assert price_for("gpt-4o").input == 1.0 and price_for("fake-vl").output == 0
    user.write_text("models:\n  gpt-4o: {input: 1.0, ouput: 2.0}\n")
    with pytest.raises(ConfigError, match="unknown key 'ouput'.*did you mean 'output'"):
        load_price_table()
    user.write_text("models:\n  gpt-4o: {input: lots}\n")
    with pytest.raises(ConfigError, match="must be numbers"):
        load_price_table()


def test_cost_of_tokens():
    assert Price("m", input=2.5, output=10.0).cost(1_000, 500) == pytest.approx(0.0025 + 0.005)


@pytest.mark.parametrize(
    "size, tokens",
    [
        ((1024, 1024), 765),  # OpenAI's documented examples for GPT-4o high detail
        ((2048, 4096), 1105),
        ((512, 512), 255),
    ],
)
def test_tile_rule_matches_openai_examples(size, tokens):
    assert image_tokens(*size, {"tiles": 512, "base": 85, "per_tile": 170}) == tokens


def test_patch_rule():
    assert image_tokens(280, 280, {"patches": 28}) == 100
    assert image_tokens(290, 280, {"patches": 28}) == 110
    assert image_tokens(4000, 4000, {"patches": 32, "max_patches": 1536, "multiplier": 1.62}) == 2489


def test_text_tokens_counts_chinese_characters():
    assert text_tokens("abcdefgh") == 2
    assert text_tokens("帮我分析") == 4


def test_estimate_run_uses_the_pixel_budget_and_says_what_it_assumed():
    price = Price("m", input=1.0, output=2.0, image={"patches": 28})
    estimate = estimate_run(
        [(2800, 2800)] * 3,
        system="",
        user="<image>Describe.",
        model="m",
        images=10,
        todo=4,
        max_pixels=280 * 280,
        price=price,
    )
    assert estimate.prompt_tokens == 100 + text_tokens("<image>Describe.") + 10
    assert estimate.completion_tokens == costs.DEFAULT_COMPLETION_TOKENS[False]
    assert estimate.cost_usd == pytest.approx(4 * price.cost(estimate.prompt_tokens, estimate.completion_tokens))
    assert "assumed" in str(estimate.note) and estimate.priced
    measured = estimate_run([], system="", user="x", model="nobody", images=1, todo=1, completion_tokens=7)
    assert not measured.priced and measured.cost_usd == 0 and "no price for 'nobody'" in str(measured.summary())
