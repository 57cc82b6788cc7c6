"""Optional cross-check of the demo against torch, imported only where torch is.

The library never imports torch; this module exists so that `numba-lstm demo`
can confirm its logits where torch happens to be installed.
"""

import numpy as np


def torch_logits(state_dict: dict, tokens: np.ndarray) -> np.ndarray:
    import torch

    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items() if k != "vocab"}
    vocab, embed = sd["embedding.weight"].shape
    layers = 1 + max(int(k.split("_l")[1]) for k in sd if k.startswith("lstm.weight_ih_l"))
    hidden = sd["lstm.weight_hh_l0"].shape[1]
    emb = torch.nn.Embedding(vocab, embed)
    lstm = torch.nn.LSTM(embed, hidden, num_layers=layers)
    fc = torch.nn.Linear(hidden, vocab)
    for prefix, module in (("embedding.", emb), ("lstm.", lstm), ("fc.", fc)):
        module.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    with torch.inference_mode():
        return fc(lstm(emb(torch.from_numpy(tokens)))[0]).numpy()
