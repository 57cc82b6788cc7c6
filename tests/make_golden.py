"""Regenerate tests/golden/*.npz from torch: `python tests/make_golden.py`.

The golden vectors let the suite check parity with torch where torch is absent.
Each file holds the parameters (``param:<name>``), the inputs, the config and
torch's outputs for one case of the parity matrix (docs/index.md).
"""

import json
from pathlib import Path

import numpy as np
from torch_cases import make_case

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "basic_f32": dict(input_size=5, hidden_size=6),
    "basic_f64": dict(input_size=5, hidden_size=6, dtype=np.float64),
    "deep_bidir_proj_f64": dict(input_size=7, hidden_size=9, num_layers=3, bidirectional=True,
                                proj_size=4, with_hx=True, dtype=np.float64),
    "lengths_bidir_f32": dict(input_size=4, hidden_size=8, num_layers=2, bidirectional=True,
                              with_lengths=True, with_hx=True, steps=9, batch=4),
    "lengths_batch_first_f64": dict(input_size=3, hidden_size=5, batch_first=True,
                                    with_lengths=True, steps=6, batch=5, dtype=np.float64),
    "nobias_unbatched_f32": dict(input_size=6, hidden_size=7, bias=False, batched=False,
                                 with_hx=True, num_layers=2),
    "proj_unbatched_bidir_f64": dict(input_size=5, hidden_size=6, proj_size=2, batched=False,
                                     bidirectional=True, dtype=np.float64),
    "single_step_f32": dict(input_size=5, hidden_size=6, steps=1, num_layers=2),
    "long_t1000_f32": dict(input_size=8, hidden_size=16, steps=1000, batch=2),
    "gru_basic_f32": dict(family="GRU", input_size=5, hidden_size=6),
    "gru_lengths_bidir_hx_f64": dict(family="GRU", input_size=4, hidden_size=8, num_layers=2,
                                     bidirectional=True, with_lengths=True, with_hx=True,
                                     steps=9, batch=4, dtype=np.float64),
    "gru_nobias_unbatched_f32": dict(family="GRU", input_size=6, hidden_size=7, bias=False,
                                     batched=False, with_hx=True, num_layers=2),
    "gru_long_t1000_f32": dict(family="GRU", input_size=8, hidden_size=16, steps=1000, batch=2),
    "rnn_tanh_bidir_f32": dict(family="RNN", input_size=5, hidden_size=6, num_layers=3,
                               bidirectional=True, with_hx=True),
    "rnn_relu_lengths_batch_first_f64": dict(family="RNN", nonlinearity="relu", input_size=3,
                                             hidden_size=5, batch_first=True, with_lengths=True,
                                             steps=6, batch=5, dtype=np.float64),
    "rnn_relu_unbatched_f32": dict(family="RNN", nonlinearity="relu", input_size=6,
                                   hidden_size=7, batched=False, num_layers=2),
}


DEMO_PROMPT = "def main(argv=None):\n    parser = "


def char_model_golden():
    """Torch's logits for the shipped demo model over DEMO_PROMPT."""
    import numba_lstm as nl
    from numba_lstm._torch_check import torch_logits
    from numba_lstm.char_model import CharModel

    model = CharModel.shipped()
    logits = torch_logits(nl.load(CharModel.shipped_path()), model.encode(DEMO_PROMPT))
    np.savez_compressed(GOLDEN / "char_lm_logits.npz", prompt=np.array(DEMO_PROMPT),
                        logits=logits)
    print("wrote char_lm_logits")


def main():
    GOLDEN.mkdir(exist_ok=True)
    char_model_golden()
    for name, config in CASES.items():
        case = make_case(**config)
        arrays = {f"param:{k}": v for k, v in case["params"].items()}
        arrays["x"] = case["x"]
        if case["hx"] is not None and config.get("family", "LSTM") == "LSTM":
            arrays["h0"], arrays["c0"] = case["hx"]
        elif case["hx"] is not None:
            arrays["h0"] = case["hx"]
        if case["lengths"] is not None:
            arrays["lengths"] = case["lengths"]
        arrays["output"], arrays["h_n"], c_n = case["expected"]
        if c_n is not None:
            arrays["c_n"] = c_n
        meta = {k: (v.__name__ if isinstance(v, type) else v) for k, v in config.items()}
        arrays["config"] = np.array(json.dumps(meta))
        np.savez_compressed(GOLDEN / f"{name}.npz", **arrays)
        print("wrote", name)


if __name__ == "__main__":
    main()
