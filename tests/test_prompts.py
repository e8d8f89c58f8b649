"""Prompt templates (files, versions, rendering) and the parsing of messy teacher completions."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from distill_jax.reasoning.styles import get_style
from distill_jax.teacher import parse, prompts
from distill_jax.teacher.parse import parse_completion

STYLE_TEMPLATE_NAMES = {"cot", "pot", "eot", "kp_cot", "kp_pot", "dss", "decomp_plan", "decomp_solve",
                        "fdd_harder", "fdd_similar"}


def test_every_template_loads_with_exemplars_and_a_version():
    templates = prompts.load_templates()
    assert STYLE_TEMPLATE_NAMES <= set(templates)
    for name, t in templates.items():
        assert t.version >= 1 and len(t.exemplars) >= 2, name
        assert t.prompt_version == f"{name}@v{t.version}#{t.content_hash[:12]}"


def test_render_is_system_then_exemplar_turns_then_the_question():
    t = prompts.get_template("pot")
    question = "A set {a, b} has 2 items and costs $3 {each}. What is {question}?"
    messages = t.render(question=question)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * len(t.exemplars) + ["user"]
    assert messages[0]["content"] == t.system
    assert messages[-1]["content"] == f"Question: {question}"  # braces in a question are not template slots
    assert messages[2]["content"] == t.exemplars[0].output
    with pytest.raises(prompts.PromptError, match="needs field"):
        prompts.get_template("decomp_solve").render(question="q")


def _copy_prompts(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(prompts.PROMPT_DIR, folder)
    return folder


def test_version_hash_follows_content_not_formatting(tmp_path):
    base = prompts.get_template("cot").prompt_version
    folder = _copy_prompts(tmp_path)
    path = folder / "cot.yaml"
    doc = yaml.safe_load(path.read_text())
    # Same content, different YAML layout (key order, flow style, no comments): same hash.
    path.write_text(yaml.safe_dump(dict(reversed(list(doc.items()))), default_flow_style=True, width=10_000))
    assert prompts.get_template("cot", str(folder)).prompt_version == base
    doc["exemplars"][0]["output"] += " "  # trailing space is stripped: still the same prompt
    path.write_text(yaml.safe_dump(doc))
    prompts.load_templates.cache_clear()
    assert prompts.get_template("cot", str(folder)).prompt_version == base
    doc["exemplars"][0]["output"] = doc["exemplars"][0]["output"].replace("18 muffins", "18 cakes")
    path.write_text(yaml.safe_dump(doc))
    prompts.load_templates.cache_clear()
    changed = prompts.get_template("cot", str(folder)).prompt_version
    assert changed != base and changed.startswith("cot@v1#")
    assert prompts.prompt_version("decomp", str(folder)).count("+") == 1


def test_malformed_prompt_file_names_the_file(tmp_path):
    folder = _copy_prompts(tmp_path)
    (folder / "pot.yaml").write_text("name: pot\nversion: 1\nstyle: pot\nsystem: s\nuser: 'Q: {question}'\n"
                                     "exemplars:\n  - problem: wrong field\n    output: x\n")
    with pytest.raises(prompts.PromptError, match=r"pot\.yaml: exemplars\[0\]: fields"):
        prompts.load_templates(str(folder))


# The exemplars are the format contract: each must be read back by the style's own answer reader.
EXEMPLAR_ANSWERS = {
    "A bakery makes 24 muffins": "4", "Ravi buys 3 notebooks at $4 each and a pen": "5.5",
    "A water tank holds 120 liters and is 40% full": "4.8",
}


@pytest.mark.parametrize("style", ["cot", "pot", "eot", "kp_cot", "kp_pot", "dss"])
def test_exemplars_parse_to_themselves_and_verify(style):
    (template,) = prompts.templates_for_style(style)
    outputs = [ex.output for ex in template.exemplars]
    for out in outputs:
        assert parse_completion(out, style).text == out  # a clean completion passes parsing unchanged
    expected = [next(a for k, a in EXEMPLAR_ANSWERS.items() if ex.field_dict()["question"].startswith(k))
                for ex in template.exemplars]
    got = [a.answer for a in get_style(style).answers(outputs)]
    assert got == expected


def test_decomposition_exemplars_parse_and_verify():
    plan, solve = prompts.templates_for_style("decomp")
    for p_ex, s_ex in zip(plan.exemplars, solve.exemplars):
        sub = parse.clean_subquestions(p_ex.output).text
        assert sub == p_ex.output == s_ex.field_dict()["subquestions"]
        assert parse.clean_subanswers(s_ex.output, sub).text == s_ex.output
    got = [a.answer for a in get_style("decomp").answers([ex.output for ex in solve.exemplars])]
    assert got == ["4", "4.8"]


def test_fdd_exemplars_parse():
    for name in ("fdd_harder", "fdd_similar"):
        for ex in prompts.get_template(name).exemplars:
            new = parse.parse_new_problem(ex.output)
            assert new.question.endswith("?") and new.answer is not None


# --- realistic messy completions ----------------------------------------------------------------------
def test_program_from_chatter_fence_and_trailing_explanation():
    raw = ("Sure! Here is a Python program that solves the problem:\n\n```python\n# muffins baked\nbaked = 24\n"
           "sold = baked * 3 / 4\nans = baked - sold - 2\nprint(ans)\n```\n\nThis program first computes how many "
           "muffins were sold and then subtracts the donation, giving 4.")
    assert parse_completion(raw, "pot").text == "baked = 24\nsold = baked * 3 / 4\nans = baked - sold - 2"


@pytest.mark.parametrize("raw, line", [
    ("ans = 20\nans = 30 +", "line 2: 'ans = 30 +'"),  # cut off at max_tokens: not the shorter `ans = 20`
    ("```python\nx = 3\nans = (x *\n```", "line 2: 'ans = (x *'"),
    ("= 20\nans = 20\nans", "line 1: '= 20'"),
])
def test_a_program_that_does_not_parse_is_rejected_not_shortened(raw, line):
    """Issue 12: a truncated teacher program used to lose its broken tail and become a target that verified."""
    parsed = parse_completion(raw, "pot")
    assert parsed.text is None and parsed.error.startswith("parse: syntax error") and line in parsed.error


def test_a_print_inside_a_block_stays():
    raw = "x = 3\nfor i in range(2):\n    print(i)\nans = x\nprint(ans)"
    assert parse_completion(raw, "pot").text == "x = 3\nfor i in range(2):\n    print(i)\nans = x"


def test_program_without_fence_drops_prose_after_the_code():
    raw = "Here you go:\r\nx = 3\r\n\r\nans = x * 4\r\nSo the answer is 12 apples, as required."
    assert parse_completion(raw, "pot").text == "x = 3\nans = x * 4"
    pal = parse_completion("```python\ndef solution():\n    x = 3\n\n    return x * 4\n\nprint(solution())\n```", "pot")
    assert pal.text == "def solution():\n    x = 3\n    return x * 4\nans = solution()"
    assert get_style("pot").answer(pal.text).answer == "12"
    bad = parse_completion("I think the answer is 12.", "pot")
    assert bad.text is None and bad.error.startswith("parse: no program")
    no_ans = parse_completion("```python\nresult = 3 * 4\nprint(result)\n```", "pot")
    assert no_ans.text is None and "ans" in no_ans.error


def test_cot_strips_markdown_latex_chatter_and_what_follows_the_answer():
    raw = ("Sure! Let's solve this step by step.\n\n**Step 1:** The notebooks cost \\(3 \\times 4 = 12\\) dollars.\n"
           "**Step 2:** His change is 20 - 12 = 8 dollars.\n\nThe answer is 8. Let me know if you need more help!")
    assert parse_completion(raw, "cot").text == (
        "Step 1: The notebooks cost 3 * 4 = 12 dollars.\nStep 2: His change is 20 - 12 = 8 dollars.\nThe answer is 8.")
    boxed = parse_completion("We add 1,200 and 34 to get 1,234.\n\nFinal answer: \\boxed{1,234}", "cot")
    assert boxed.text == "We add 1,200 and 34 to get 1,234.\nThe answer is 1234."
    kept = parse_completion("Let's add: 2 + 3 = 5 apples.\nThe answer is 5.", "cot")  # reasoning, not chatter
    assert kept.text == "Let's add: 2 + 3 = 5 apples.\nThe answer is 5."
    assert parse_completion("I am not sure how to do this.", "cot").error.startswith("parse: no final answer")
    assert parse_completion("   ", "cot").error == "parse: empty completion"


def test_kp_keeps_its_three_parts():
    raw = ("**Core question:** How many muffins are left?\n\n**Key information:**\n- 24 muffins are baked\n"
           "- 3/4 are sold\n- 2 are given away\n\n**Solution:**\n```python\nsold = 24 * 3 / 4\n"
           "ans = 24 - sold - 2\n```\n"
           "Hope this helps!")
    assert parse_completion(raw, "kp_pot").text == (
        "Core question: How many muffins are left?\nKey information: 24 muffins are baked; 3/4 are sold; "
        "2 are given away\nSolution:\nsold = 24 * 3 / 4\nans = 24 - sold - 2")
    cot = parse_completion("Core question: How many?\nKey information: 2 and 3\nSolution: 2 + 3 = 5.\n"
                           "The answer is 5.\nI double-checked it.", "kp_cot")
    assert cot.text == "Core question: How many?\nKey information: 2 and 3\nSolution: 2 + 3 = 5.\nThe answer is 5."
    missing = parse_completion("Core question: How many?\nSolution: The answer is 5.", "kp_cot")
    assert missing.text is None and "Key information" in missing.error


def test_equations_keep_comments_and_drop_prose():
    raw = ("Here are the equations:\n```\n# muffins sold\nsold = 24 * 3/4\nsold + 2 + left = 24\nans = left\n```\n"
           "Solving this system gives left = 4.")
    assert parse_completion(raw, "eot").text == "% muffins sold\nsold = 24 * 3/4\nsold + 2 + left = 24\nans = left"
    assert parse_completion("x = 4", "eot").error == "parse: no 'ans = ...' equation"


def test_decomposition_and_new_problem_parsers():
    plan = parse.clean_subquestions("Here is the plan:\n**1.** How many are sold?\n2) How many are left?\nDone.")
    assert plan.text == "Q1: How many are sold?\nQ2: How many are left?"
    too_many = parse.clean_subquestions("\n".join(f"Q{i}: Q{i}?" for i in range(1, 7)))
    assert too_many.text is None and "more than 4" in too_many.error
    answers = parse.clean_subanswers("Sure, here are the answers.\n**Q1:** How many are sold?\n**A1:** 24 * 3 / 4 "
                                     "= 18.\nSo 18 are sold.\nQ2: How many are left?\nA2: 24 - 18 - 2 = 4.\n\n"
                                     "The answer is 4. I hope this helps!", plan.text)
    assert answers.text == ("Q1: How many are sold?\nA1: 24 * 3 / 4 = 18. So 18 are sold.\n"
                            "Q2: How many are left?\nA2: 24 - 18 - 2 = 4.\nThe answer is 4.")
    assert "2 not answered" in parse.clean_subanswers("A1: 3. The answer is 3.", plan.text).error
    assert "no final answer" in parse.clean_subanswers("A1: 3 are sold.\nA2: 4 are left.", plan.text).error
    new = parse.parse_new_problem("**New problem:** A shop has 1,000 pens\nand sells 40. How many are left?\n"
                                  "**Solution:** 1000 - 40 = 960.\n**Answer:** 960")
    assert new.question == "A shop has 1,000 pens and sells 40. How many are left?" and new.answer == "960"
    assert parse.parse_new_problem("I cannot do that.").error == "parse: no 'New problem:' line"
