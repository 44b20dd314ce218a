"""`dlx sample` on a tiny character LM trained here, and the sampling rule itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlx.sample import pick

TEXT = "It is a truth universally acknowledged, that a single man in possession. " * 40


@pytest.fixture(scope="module")
def lm_run(cli, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text(TEXT)
    result = cli(
        "train",
        "recipe=transformer",
        f"data.path={root / 'corpus.txt'}",
        "trainer.max_steps=60",
        "data.seq_len=32",
        "data.batch_size=16",
        "model.d_model=32",
        "model.layers=1",
        "model.heads=2",
        "optim.lr=1e-2",
        "trainer.progress=plain",
        f"outputs.dir={root}",
    )
    assert result.exit_code == 0, result.output
    assert "test/bits_per_char" in result.output
    (run,) = (root / "transformer").iterdir()
    return run


def test_sample_continues_the_prompt(cli, lm_run: Path) -> None:
    out = cli("sample", str(lm_run), "--prompt", "It is a ", "--tokens", "40")
    assert out.exit_code == 0, out.output
    text = out.output.rstrip("\n")
    assert text.startswith("It is a ") and len(text) == len("It is a ") + 40
    assert set(text) <= set(TEXT)  # only characters of the corpus, never <pad>/<unk>
    greedy = [
        cli("sample", str(lm_run), "--temperature", "0", "--tokens", "20").output for _ in range(2)
    ]
    assert greedy[0] == greedy[1]


def test_sample_refuses_a_classifier_run(cli, tmp_path: Path) -> None:
    assert (
        cli("train", "recipe=digits", "trainer.max_steps=2", f"outputs.dir={tmp_path}").exit_code
        == 0
    )
    (run,) = (tmp_path / "digits").iterdir()
    out = cli("sample", str(run))
    assert out.exit_code == 2 and "not a language-model run" in out.output


def test_pick_respects_temperature_top_k_and_bans() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([5.0, 4.0, 1.0, 0.5, 0.0])
    assert pick(logits, 0.0, None, rng) == 0
    assert pick(logits, 0.0, None, rng, banned=(0,)) == 1
    draws = [pick(logits, 1.0, 2, rng) for _ in range(300)]
    assert set(draws) == {0, 1}  # only the top 2
    assert 0.6 < draws.count(0) / 300 < 0.85  # softmax(5, 4): 0.73
