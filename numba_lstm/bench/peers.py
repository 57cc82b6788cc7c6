"""The contenders, each behind the same two-method face: ``run()`` does one timed
call (a whole sequence, or one streaming step with the state carried) and
``output()`` hands back the last call's output as NumPy for the agreement check.

Peers are imported only when asked for; a missing one is reported, not fatal.
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np

from .shapes import Shape


class Unavailable(Exception):
    """This peer cannot run here (not installed, no device); the message says why."""


def _require(module: str, why: str = "") -> None:
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed{why}")


class NumbaLSTM:
    name = "numba_lstm"

    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray, device: str = "cpu"):
        import numba_lstm as nl

        self.lstm = getattr(nl, shape.family).from_state_dict(state_dict).to(device)
        self.x = x
        self.sync = lambda: None
        if device != "cpu":  # inputs and outputs stay on the GPU, as torch's do
            from numba import cuda

            self.x, self.sync = cuda.to_device(x), cuda.synchronize
        self.stream = self.lstm.stream() if shape.streaming else None
        self.y = None
        if device == "cpu":  # warm-up includes the team's helpers loading their code
            from numba_lstm.cpu import TEAM

            self.run()
            TEAM.wait_ready()
            if self.stream is not None:
                self.stream.reset()  # the peers start from the zero state too

    def run(self) -> None:
        if self.stream is not None:
            self.y = self.stream(self.x)
        else:
            self.y, _ = self.lstm(self.x)
        self.sync()

    def output(self) -> np.ndarray:
        if hasattr(self.y, "copy_to_host"):
            return self.y.copy_to_host()
        return np.asarray(self.y)


def _torch_lstm(shape: Shape, state_dict: dict, device: str):
    _require("torch")
    import torch

    if device != "cpu" and not torch.cuda.is_available():
        raise Unavailable("torch has no CUDA device here")
    lstm = getattr(torch.nn, shape.family)(shape.input_size, shape.hidden_size, shape.layers,
                                           bidirectional=shape.bidirectional)
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    return lstm.eval().to(device)


class Torch:
    name = "torch"

    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray, device: str = "cpu"):
        _require("torch")
        import torch

        self.torch = torch
        self.lstm = _torch_lstm(shape, state_dict, device)
        self.x = torch.from_numpy(x).to(device)
        self.streaming = shape.streaming
        self.state = None
        self.y = None
        self.sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)

    def run(self) -> None:
        with self.torch.inference_mode():
            self.y, state = self.lstm(self.x, self.state)
        if self.streaming:
            self.state = state
        self.sync()

    def output(self) -> np.ndarray:
        return self.y.cpu().numpy()


class OnnxRuntime:
    """torch.onnx.export of the same nn.LSTM (nn.GRU); streaming exports the
    initial state as inputs."""

    name = "onnxruntime"

    def __init__(self, shape: Shape, state_dict: dict, x: np.ndarray, device: str = "cpu"):
        if device != "cpu":
            raise Unavailable("only the CPUExecutionProvider is benchmarked")
        _require("onnxruntime")
        _require("onnx", " (torch.onnx.export needs it)")
        _require("torch", " (the ONNX model is exported with torch.onnx.export)")
        import onnxruntime as ort
        import torch

        lstm = _torch_lstm(shape, state_dict, "cpu")
        n = shape.layers * shape.directions
        h0 = torch.zeros(n, shape.batch, shape.hidden_size)
        states = ["h", "c"] if shape.family == "LSTM" else ["h"]
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if shape.streaming:
                hx = (h0, h0.clone()) if shape.family == "LSTM" else h0
                torch.onnx.export(lstm, (torch.from_numpy(x), hx), buffer,
                                  dynamo=False, input_names=["x"] + [s + "0" for s in states],
                                  output_names=["y"] + [s + "_n" for s in states])
            else:
                torch.onnx.export(lstm, (torch.from_numpy(x),), buffer, dynamo=False,
                                  input_names=["x"],
                                  output_names=["y"] + [s + "_n" for s in states])
        self._model_bytes = buffer.getvalue()  # the quantized peer starts from it
        self.session = ort.InferenceSession(self._model_bytes,
                                            providers=["CPUExecutionProvider"])
        self.feed = {"x": x}
        self.state_names = [s + "0" for s in states]
        if shape.streaming:
            self.feed.update({name: h0.numpy().copy() for name in self.state_names})
        self.streaming = shape.streaming
        self.y = None

    def run(self) -> None:
        self.y, *state = self.session.run(None, self.feed)
        if self.streaming:
            self.feed.update(zip(self.state_names, state, strict=True))

    def output(self) -> np.ndarray:
        return self.y


PEERS = {cls.name: cls for cls in (NumbaLSTM, Torch, OnnxRuntime)}
