"""Train the character-level language model that `numba-lstm demo` ships.

    python docs/examples/train_char_model.py [--steps N] [--out PATH]

Embedding -> 2-layer LSTM -> Linear, trained with torch on a corpus every
machine has: source files of the Python standard library. The weights and the
vocabulary (as int32 code points under "vocab") are written as safetensors
with numba_lstm's own writer. Needs torch (CPU is fine).
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

import numba_lstm as nl

CORPUS_MODULES = ["textwrap.py", "argparse.py", "string.py", "shlex.py", "fractions.py",
                  "calendar.py", "difflib.py", "heapq.py", "bisect.py", "glob.py"]


class CharLM(torch.nn.Module):
    def __init__(self, vocab: int, embed: int = 48, hidden: int = 192, layers: int = 2):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, embed)
        self.lstm = torch.nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.fc = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embedding(tokens), state)
        return self.fc(out), state


def read_corpus(paths: list[Path]) -> str:
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths)
    return "".join(c if (32 <= ord(c) < 127 or c == "\n") else "?" for c in text)


def default_corpus() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / m for m in CORPUS_MODULES if (stdlib / m).exists()]


def train(text: str, steps: int, seq: int = 128, batch: int = 32, seed: int = 0,
          log_every: int = 100) -> tuple[CharLM, list[str]]:
    torch.manual_seed(seed)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    model = CharLM(len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for step in range(steps):
        starts = rng.integers(0, len(data) - seq - 1, batch)
        x = torch.stack([data[s:s + seq] for s in starts])
        y = torch.stack([data[s + 1:s + seq + 1] for s in starts])
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)
    return model, vocab


def save(model: CharLM, vocab: list[str], path: Path) -> None:
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    weights["vocab"] = np.array([ord(c) for c in vocab], dtype=np.int32)
    nl.save(path, weights)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path,
                        default=Path(nl.__file__).parent / "data" / "char_lm.safetensors")
    parser.add_argument("--corpus", type=Path, nargs="*", help="text files (default: stdlib)")
    args = parser.parse_args(argv)
    text = read_corpus(args.corpus or default_corpus())
    print(f"corpus: {len(text)} characters")
    model, vocab = train(text, args.steps)
    save(model, vocab, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, vocab {len(vocab)})")


if __name__ == "__main__":
    main()
