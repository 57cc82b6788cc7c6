"""Regenerate tests/fixtures from torch: `python tests/make_fixtures.py`.

Small weight files in every format torch writes, plus expected.npz holding
torch's own values for each (name -> array, float16/bfloat16 upcast), so the
loader is checked bit for bit where torch is absent.
"""

from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def tensors_by_file():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    model = torch.nn.Sequential()
    model.add_module("embed", torch.nn.Embedding(7, 3))
    model.add_module("lstm", torch.nn.LSTM(3, 5, batch_first=True))
    model.add_module("fc", torch.nn.Linear(5, 7))
    base = torch.arange(24, dtype=torch.float32)
    shared = {"whole": base, "view": base[4:16].view(3, 4), "t": base[4:16].view(3, 4).t(),
              "strided": base[1::3]}
    dtypes = {name: (torch.randn(3, 5) * 10).to(dt)[:, ::2] for name, dt in [
        ("f16", torch.float16), ("bf16", torch.bfloat16), ("f64", torch.float64),
        ("i64", torch.int64), ("i32", torch.int32), ("u8", torch.uint8), ("b", torch.bool)]}
    return {"lstm": lstm.state_dict(), "model": model.state_dict(), "shared": shared,
            "dtypes": dtypes}


def as_numpy(t):
    return t.float().numpy() if t.dtype in (torch.float16, torch.bfloat16) else t.numpy()


def main():
    FIXTURES.mkdir(exist_ok=True)
    expected = {}
    for stem, tensors in tensors_by_file().items():
        torch.save(tensors, FIXTURES / f"{stem}_zip.pt")
        torch.save(tensors, FIXTURES / f"{stem}_legacy.pt", _use_new_zipfile_serialization=False)
        expected.update({f"{stem}/{k}": as_numpy(v) for k, v in tensors.items()})
    np.savez(FIXTURES / "expected.npz", **expected)
    print("wrote", sorted(p.name for p in FIXTURES.iterdir()))


if __name__ == "__main__":
    main()
