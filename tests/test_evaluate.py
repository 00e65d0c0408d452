"""Quality evaluation: shipped lm-eval tasks, scoring checked by hand, fail-fast task checks, the base row."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from peftbench import evaluate, models
from peftbench.runner import run_point

from .conftest import SHARED_DATA, compose_recipe

GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"
needs_gsm8k = pytest.mark.skipif(  # CI has ../shared beside the clone: there a missing copy fails instead of skipping
    not GSM8K_TEST.exists() and not os.environ.get("CI"), reason=f"no GSM8K copy at {GSM8K_TEST}"
)
# Tiny random models score nothing meaningful; these runs check the plumbing, so they opt in to evaluation.
TINY_EVAL = ["eval.on_random_init=true", "eval.batch_size=4"]


def gsm8k_cfg(**options):
    return OmegaConf.create({"tasks": ["gsm8k_local"], "num_fewshot": 0, "data_dir": str(SHARED_DATA), **options})


@needs_gsm8k
def test_tiny_model_on_the_shipped_gsm8k_task():
    cfg = compose_recipe("model=tiny_llama")
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_model(cfg.model, vocab_size=len(tokenizer))
    out = evaluate.evaluate_model(model, tokenizer, gsm8k_cfg(limit=3, max_gen_toks=8, batch_size=3))
    assert out["eval_samples"] == {"gsm8k_local": 3}
    assert out["score_metric"] == "gsm8k_local/exact_match,strict-match"
    assert out["score"] == out["scores"]["gsm8k_local/exact_match,strict-match"]
    assert 0.0 <= out["score"] <= 1.0 and out["score_stderr"] is not None
    assert "gsm8k_local/exact_match,flexible-extract" in out["scores"]
    assert out["time_eval_s"] > 0


class ScriptedLM:
    """Builds an lm-eval LM that answers each GSM8K question with a fixed generation (no model at all)."""

    @staticmethod
    def make(answers: dict[str, str]):
        from lm_eval.api.model import LM

        class Scripted(LM):
            def __init__(self):
                super().__init__()
                self.contexts: list[str] = []

            def generate_until(self, requests, disable_tqdm=False):
                self.contexts += [r.args[0] for r in requests]
                return [answers[r.doc["question"]] for r in requests]

            def loglikelihood(self, requests, disable_tqdm=False):
                raise AssertionError("GSM8K is a generation task")

            loglikelihood_rolling = loglikelihood

        return Scripted()


@needs_gsm8k
def test_gsm8k_scoring_matches_a_hand_count():
    docs = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:6]]
    final = [d["answer"].split("####")[-1].strip() for d in docs]
    assert final[2] == "70000"  # the item below writes with a thousands separator
    generations = [
        # (generation, strict-match correct?, flexible-extract correct?) -- counted by hand
        (f"Half of it, then add.\n#### {final[0]}", True, True),
        (f"#### {int(final[1]) + 1}", False, False),
        ("So the profit is\n#### 70,000", True, True),  # commas are ignored on both sides
        (f"The answer is {final[3]}.", False, True),  # no "####": only the flexible filter finds it
        (f"#### {final[4]} and then 12345", True, False),  # flexible takes the last number
        ("I do not know.", False, False),
    ]
    lm = ScriptedLM.make({d["question"]: g for d, (g, _, _) in zip(docs, generations)})
    results = evaluate.run_tasks(lm, gsm8k_cfg(limit=6))
    out = evaluate.summarize(results, gsm8k_cfg(limit=6))

    strict = sum(s for _, s, _ in generations) / 6  # 3/6
    flexible = sum(f for _, _, f in generations) / 6  # 3/6, from different items
    assert out["score"] == pytest.approx(strict) == pytest.approx(0.5)
    assert out["scores"]["gsm8k_local/exact_match,flexible-extract"] == pytest.approx(flexible)
    assert out["score_stderr"] == pytest.approx(math.sqrt(strict * (1 - strict) / 5))  # sample stderr of a mean
    assert out["eval_samples"] == {"gsm8k_local": 6}
    assert all(c.startswith("Question: ") and c.endswith("\nAnswer:") for c in lm.contexts)


def test_topics_task_prompt_matches_training_format():
    """lm-eval's context + target for each test item is exactly the training prompt + completion."""
    cfg = compose_recipe()
    spec = evaluate.task_specs(cfg.eval)[0]
    task = evaluate.task_manager(False).load([spec])["tasks"]["topics"]
    for doc in list(task.test_docs())[:5]:
        choices = task.doc_to_choice(doc)
        built = task.doc_to_text(doc) + task.config.target_delimiter + choices[task.doc_to_target(doc)]
        expected = cfg.data.mapping.prompt.format(**doc) + cfg.data.mapping.completion.format(**doc)
        assert built == expected


def test_prompt_tuning_loglikelihood_skips_virtual_tokens():
    """A prompt-tuned PeftModel prepends virtual tokens; HFLM must score the continuation after them (by hand here)."""
    import torch
    from lm_eval.api.instance import Instance
    from peft import PromptTuningConfig, get_peft_model

    cfg = compose_recipe("model=tiny_llama")
    tokenizer = models.load_tokenizer(cfg.model)
    base = models.load_model(cfg.model, vocab_size=len(tokenizer))
    torch.manual_seed(0)
    for param in base.parameters():  # large random weights: log-probs that differ from position to position
        param.data.normal_(0.0, 0.5)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    context, continuation = "Sentence: I saw a cat.\nTopic:", " animal"
    request = Instance("loglikelihood", doc={}, arguments=(context, continuation), idx=0)
    got, _ = evaluate.live_lm(model, tokenizer, batch_size=1).loglikelihood([request])[0]

    ctx_ids = tokenizer(context).input_ids
    cont_ids = tokenizer(context + continuation).input_ids[len(ctx_ids) :]
    ids = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        logprobs = model(ids).logits[0].log_softmax(-1)
    expected = sum(logprobs[5 + len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))  # after 5 virtual
    unshifted = sum(logprobs[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))
    assert got == pytest.approx(expected, abs=1e-3)
    assert abs(unshifted - expected) > 0.1  # the check can tell the two apart


def test_unknown_task_fails_before_any_model_loads(tiny_cfg, monkeypatch):
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append("model"))
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: loaded.append("tokenizer"))
    record = run_point(tiny_cfg("eval.tasks=[topcis]"))
    assert record["status"] == "invalid"
    assert "unknown task `topcis`" in record["error"] and "`topics`" in record["error"]
    assert loaded == []


def test_missing_local_task_data_fails_before_any_model_loads(tiny_cfg, monkeypatch, tmp_path):
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append("model"))
    record = run_point(tiny_cfg("eval=gsm8k_local", f"eval.data_dir={tmp_path / 'nowhere'}"))
    assert record["status"] == "invalid"
    assert "gsm8k_local" in record["error"] and str(tmp_path / "nowhere" / "gsm8k") in record["error"]
    assert loaded == []


@pytest.mark.parametrize(("method", "merged"), [("lora", True), ("qlora", False), ("prompt_tuning", False)])
def test_trained_point_is_scored_with_a_delta_over_the_cached_base_row(tiny_cfg, method, merged):
    """One step of training is enough: the score is read, not judged. The base-row reuse is checked once (lora): the
    cached row depends on the model and the tasks, not on the method that trained."""
    cfg = tiny_cfg(f"method={method}", "eval.limit=8", "train.max_steps=1", *TINY_EVAL)
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["merged"] is merged
    assert record["eval_samples"] == {"topics": 8}
    assert record["score"] == record["scores"]["topics/acc"] and record["score_stderr"] is not None

    results = Path(cfg.run.results_dir)
    base_dirs = [p.parent for p in results.glob("base-*/record.json")]
    assert len(base_dirs) == 1
    base = json.loads((base_dirs[0] / "record.json").read_text())
    assert base["method"] == "base" and base["status"] == "ok" and base["eval_samples"] == {"topics": 8}
    assert record["score_delta"] == pytest.approx(record["score"] - base["score"])

    if method != "lora":
        return
    # a second point finds the base row on disk and does not evaluate it again
    stamp = (base_dirs[0] / "record.json").stat().st_mtime_ns
    again = run_point(tiny_cfg("method=ia3", "eval.limit=8", "train.max_steps=1", *TINY_EVAL))
    assert again["base_run_id"] == base["run_id"]
    assert (base_dirs[0] / "record.json").stat().st_mtime_ns == stamp


def test_random_init_points_skip_evaluation_by_default(tiny_cfg):
    record = run_point(tiny_cfg("method=lora", "train.max_steps=1"))
    assert record["status"] == "ok" and "random-init" in record["eval_skipped"] and "score" not in record


@needs_gsm8k
def test_forgetting_check_scores_a_second_task_before_and_after(tiny_cfg):
    cfg = tiny_cfg(
        "method=lora",
        "train.max_steps=1",
        "eval.limit=2",
        "eval.max_gen_toks=4",
        "eval.forgetting_tasks=[gsm8k_local]",
        f"eval.data_dir={SHARED_DATA}",
        *TINY_EVAL,
    )
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["eval_samples"] == {"topics": 2, "gsm8k_local": 2}
    assert record["forgetting_metric"] == "gsm8k_local/exact_match,strict-match"
    base = json.loads((Path(cfg.run.results_dir) / record["base_run_id"] / "record.json").read_text())
    assert record["forgetting_delta"] == pytest.approx(record["forgetting_score"] - base["forgetting_score"])


def test_shape_only_point_validates_without_lm_eval_installed(tiny_cfg, monkeypatch):
    """A GPU machine carrying no lm-eval can still run random-init points, whose evaluation is skipped anyway."""
    import importlib.util

    from peftbench.validation import validate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    validate(tiny_cfg("eval.tasks=[topcis]"))  # skipped evaluation: not checked, no lm-eval import
    with pytest.raises(evaluate.EvalError, match="topcis"):
        validate(tiny_cfg("eval.tasks=[topcis]", "eval.on_random_init=true"))  # will run: checked, and refused
