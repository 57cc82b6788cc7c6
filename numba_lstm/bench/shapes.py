"""The benchmark shapes (docs/performance.md, "The shapes and the bar"), their
weights and inputs, and their napkin math."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    id: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    layers: int
    bidirectional: bool
    note: str
    family: str = "LSTM"  # or "GRU"

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        return {"LSTM": 4, "GRU": 3}[self.family]

    def layer_inputs(self) -> list[int]:
        return [self.input_size] + [self.directions * self.hidden_size] * (self.layers - 1)

    def flops(self) -> int:
        """Multiply-adds x 2 of the matmuls (input projection, recurrence) per call.

        The gate nonlinearities and cell update add ~10 flops per hidden unit per
        step, under 1% at these sizes, and are left out.
        """
        G = self.gates * self.hidden_size
        per_step = sum(self.directions * 2 * self.batch * (i + self.hidden_size) * G
                       for i in self.layer_inputs())
        return per_step * self.steps

    def weight_bytes(self, itemsize: int = 4) -> int:
        """Bytes of every weight matrix: all of it is read at least once per call."""
        G = self.gates * self.hidden_size
        return sum(self.directions * (i + self.hidden_size) * G
                   for i in self.layer_inputs()) * itemsize

    def recurrent_bytes_per_step(self, itemsize: int = 4) -> int:
        """W_hh bytes read at every step (the input projection is batched over steps)."""
        return (self.layers * self.directions * self.hidden_size * self.gates * self.hidden_size
                * itemsize)

    @property
    def streaming(self) -> bool:
        """One step per call with the state carried from the previous call."""
        return self.steps == 1

    def state_dict(self, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
        """torch.nn.LSTM's (GRU's) parameter names, U(-1/sqrt(H), 1/sqrt(H)) as torch
        draws them."""
        rng = np.random.default_rng(seed)
        H, G, bound = self.hidden_size, self.gates * self.hidden_size, self.hidden_size ** -0.5
        params = {}
        for layer, in_size in enumerate(self.layer_inputs()):
            for suffix in ("", "_reverse")[: self.directions]:
                for name, shape in (("weight_ih", (G, in_size)), ("weight_hh", (G, H)),
                                    ("bias_ih", (G,)), ("bias_hh", (G,))):
                    params[f"{name}_l{layer}{suffix}"] = (
                        rng.uniform(-bound, bound, shape).astype(dtype))
        return params

    def inputs(self, seed: int = 1, dtype=np.float32) -> np.ndarray:
        """x (T, B, I) ~ N(0, 1)."""
        rng = np.random.default_rng(seed)
        return rng.standard_normal((self.steps, self.batch, self.input_size)).astype(dtype)


SHAPES = (
    Shape("S1", 1, 100, 64, 128, 1, False, "latency"),
    Shape("S2", 1, 1000, 128, 256, 2, False, "long sequence"),
    Shape("S3", 1, 200, 256, 512, 1, False, "large hidden"),
    Shape("S4", 8, 200, 128, 256, 1, False, "small batch"),
    Shape("S5", 64, 50, 256, 256, 1, True, "bidirectional"),
    Shape("S6", 32, 100, 256, 512, 2, False, "throughput"),
    Shape("S7", 256, 50, 64, 128, 1, False, "big batch"),
    Shape("S8", 1, 1, 64, 256, 2, False, "one streaming step per call, state carried"),
    Shape("S9", 4, 300, 40, 160, 1, False, "a few requests at once"),
    Shape("S10", 2, 400, 64, 64, 3, True, "small bidirectional stack"),
    Shape("G1", 1, 100, 64, 128, 1, False, "S1 as a GRU", "GRU"),
    Shape("G4", 8, 200, 128, 256, 1, False, "S4 as a GRU", "GRU"),
    Shape("G6", 32, 100, 256, 512, 2, False, "S6 as a GRU", "GRU"),
    Shape("G9", 4, 300, 40, 160, 1, False, "S9 as a GRU", "GRU"),
)

BY_ID = {s.id: s for s in SHAPES}

# Targets, as minimum peer_time / our_time (docs/performance.md). Batch >= 32
# aims at 90% of the machine's FMA peak instead, which the table reports beside
# these; against the peers it has the floor, 1.0x, that every shape must pass.
TARGETS = {
    **{s: {"torch": 1.5, "onnxruntime": 1.3} for s in ("S1", "S2", "S3", "S4", "S9", "S10",
                                                       "G1", "G4", "G9")},
    **{s: {"torch": 1.0, "onnxruntime": 1.0} for s in ("S5", "S6", "S7", "G6")},
    "S8": {"torch": 5.0, "onnxruntime": 1.2},
}


# Shapes not given targets have the floor: at least as fast as each peer.
FLOOR = {"torch": 1.0, "onnxruntime": 1.0}


def targets_of(shape: Shape) -> dict[str, float]:
    """Minimum peer_time / our_time per peer: TARGETS', else the floor."""
    return TARGETS.get(shape.id, FLOOR)


# The floor's regime, for shapes the bench has never seen (numba-lstm bench
# --unseen): the bench's speed must hold there too, not only on its own shapes.
UNSEEN_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16)
UNSEEN_HIDDEN = (64, 96, 128, 192, 256, 384, 512, 768, 1024)
UNSEEN_STEPS = (64, 100, 200, 400, 1000)
UNSEEN_INPUTS = (32, 64, 128, 256)
# T is halved (not below 64) until a call is at most this many flops, ~0.1 s
# on two AVX-512 cores, so that a set of 20 takes minutes.
UNSEEN_MAX_FLOPS = 4e10


def unseen_shapes(n: int, seed: int = 0, families: tuple[str, ...] = ("LSTM", "GRU")
                  ) -> list[Shape]:
    """n random shapes of the floor's regime (batch 1-16, H 64-1024, T 64-1000,
    1-4 layers, either direction, of ``families``), the same for the same seed
    and families; ids U0, U1, ..."""
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(n):
        B, H, T, I = (int(rng.choice(v)) for v in (UNSEEN_BATCHES, UNSEEN_HIDDEN, UNSEEN_STEPS,
                                                    UNSEEN_INPUTS))
        L, bidirectional = int(rng.integers(1, 5)), bool(rng.integers(0, 2))
        family = str(rng.choice(list(families)))
        shape = Shape(f"U{i}", B, T, I, H, L, bidirectional, f"unseen, seed {seed}", family)
        while shape.flops() > UNSEEN_MAX_FLOPS and shape.steps >= 128:
            shape = Shape(shape.id, B, shape.steps // 2, I, H, L, bidirectional, shape.note,
                          family)
        shapes.append(shape)
    return shapes


def describe(shape: dict) -> str:
    """A shape a table names by id alone (an unseen one), spelled out; ``shape``
    as dataclasses.asdict gives it (the reports' JSON)."""
    return (f"{shape['id']}: {shape['family']} B={shape['batch']} T={shape['steps']} "
            f"I={shape['input_size']} H={shape['hidden_size']} L={shape['layers']}"
            + (" bidirectional" if shape["bidirectional"] else "") + f" ({shape['note']}).")
