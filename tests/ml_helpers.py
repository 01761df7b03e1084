"""Helpers for the ML tests: tiny random-init models built offline, and an isolated MISTUDIO_HOME.

Weights don't matter for plumbing tests, so models are 2-layer, 64-wide random configs; the real
`load_model(path)` loads them back from a folder. The GPT-2 tokenizer is a byte-level BPE trained
in a fraction of a second on the stdlib corpus, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
EOS = "<|endoftext|>"


def train_bpe_tokenizer(vocab_size: int = 512):
    """A GPT-2 style (byte-level BPE, <|endoftext|> as BOS/EOS) tokenizer, trained offline."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([topics[k] for k in sorted(topics)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, model_max_length=256)


def tiny_config(model_type: str, vocab_size: int = 512):
    """A 2-layer random config of a supported architecture."""
    from transformers import (
        BertConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
        RobertaConfig,
    )

    if model_type == "gpt2":
        return GPT2Config(
            n_layer=2, n_embd=64, n_head=2, vocab_size=vocab_size, n_positions=256, bos_token_id=0, eos_token_id=0
        )
    common = dict(TINY, vocab_size=vocab_size, max_position_embeddings=256)
    if model_type == "gpt_neox":
        return GPTNeoXConfig(**common, use_parallel_residual=True)
    if model_type in ("llama", "mistral", "qwen2", "qwen3"):
        cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[model_type]
        return cls(**common, num_key_value_heads=2, head_dim=32)
    if model_type == "bert":
        return BertConfig(**common)
    if model_type == "roberta":
        return RobertaConfig(**common, pad_token_id=1)
    raise ValueError(model_type)


def tiny_model(model_type: str, causal_lm: bool = True, seed: int = 0):
    """A random-init model in eval mode (with an LM head for decoders when `causal_lm`)."""
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(model_type)
    decoder = model_type not in ("bert", "roberta")
    cls = AutoModelForCausalLM if decoder and causal_lm else AutoModel
    model = cls.from_config(config, attn_implementation="eager")
    return model.eval()


def save_tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 LM with a trained BPE tokenizer, saved like a hub checkpoint."""
    from transformers import GPT2LMHeadModel

    tokenizer = train_bpe_tokenizer()
    torch.manual_seed(0)
    config = tiny_config("gpt2", vocab_size=len(tokenizer))
    config.architectures = ["GPT2LMHeadModel"]
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def analysed_gpt2_run(training_id: str, model_folder: Path, model: str | None = None) -> Path:
    """A run of the tiny GPT-2 (saved to model_folder), or of `model`, trained for 20 steps and analysed,
    under runs/: the SAE the steering tests steer with."""
    from mistudio.features import extract_features
    from mistudio.settings import get_settings
    from mistudio.training import prepare_and_train, prepare_config

    model = model or save_tiny_gpt2(model_folder)
    config = prepare_config({"model": str(model), "steps": 20, "eval_every": 0, "checkpoint_every": 10,
                             "log_every": 5, "device": "cpu"})
    run_dir = get_settings().runs_dir / training_id
    prepare_and_train(config, run_dir, evaluate=False)
    extract_features(run_dir, n_tokens=500)
    return run_dir


@pytest.fixture
def mistudio_home(tmp_path, monkeypatch):
    """An empty MISTUDIO_HOME and the small `ci` profile, for one test."""
    monkeypatch.setenv("MISTUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MISTUDIO_PROFILE", "ci")
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def minilm():
    from mistudio.models import load_model

    return load_model()


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_gpt2_dir):
    from mistudio.models import load_model

    return load_model(str(tiny_gpt2_dir))
