"""The shipped character-level language model: Embedding -> 2-layer LSTM -> Linear.

Trained with torch by docs/examples/train_char_model.py on Python standard
library source; stored as safetensors with the vocabulary as int32 code points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import load
from .modules import LSTM, Embedding, Linear
from .precompile import wait_compiled

SHIPPED = Path(__file__).parent / "data" / "char_lm.safetensors"


@dataclass
class Generation:
    text: str
    seconds: float
    prompt_logits: np.ndarray  # (len(prompt), V)


class CharModel:
    def __init__(self, state_dict: dict[str, np.ndarray]):
        self.vocab = [chr(c) for c in state_dict["vocab"]]
        self.index = {c: i for i, c in enumerate(self.vocab)}
        self.embedding = Embedding.from_state_dict(state_dict, prefix="embedding.")
        self.lstm = LSTM.from_state_dict(state_dict, prefix="lstm.")
        self.fc = Linear.from_state_dict(state_dict, prefix="fc.")

    @classmethod
    def shipped(cls) -> CharModel:
        return cls(load(SHIPPED))

    @staticmethod
    def shipped_path() -> Path:
        return SHIPPED

    def encode(self, text: str) -> np.ndarray:
        unknown = self.index.get("?", 0)
        return np.array([self.index.get(c, unknown) for c in text], dtype=np.int64)

    def logits(self, text: str) -> np.ndarray:
        """(len(text), V) next-character logits, one full-sequence call."""
        return self.fc(self.lstm(self.embedding(self.encode(text)))[0])

    def generate(self, prompt: str, length: int, temperature: float = 0.8,
                 seed: int = 0) -> Generation:
        """Feed the prompt, then sample one character at a time through a stream."""
        if not prompt:
            raise ValueError("the prompt must have at least one character")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        rng = np.random.default_rng(seed)
        stream = self.lstm.stream()
        prompt_logits = self.fc(stream(self.embedding(self.encode(prompt))))
        logits, out = prompt_logits[-1], []
        # Throwaway steps load the one-step kernel (on a cold cache the first
        # starts its compilation in the background, then we wait for it), so
        # the rate below measures generation, not compilation.
        self.lstm.stream()(self.embedding(np.array([0])))
        wait_compiled()
        self.lstm.stream()(self.embedding(np.array([0])))
        start = time.perf_counter()
        for _ in range(length):
            z = logits.astype(np.float64) / temperature
            p = np.exp(z - z.max())
            token = int(rng.choice(len(p), p=p / p.sum()))
            out.append(self.vocab[token])
            logits = self.fc(stream(self.embedding(np.array([token]))))[0]
        return Generation("".join(out), time.perf_counter() - start, prompt_logits)
