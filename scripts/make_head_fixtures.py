#!/usr/bin/env python3
"""Seeded random embedding heads and their outputs from torch, for `sieve classify`'s tests.

Writes tests/fixtures/heads/{*.safetensors, cases.json}: four heads in the layouts users bring
(the LAION aesthetic MLP's `layers.N` names with no activation, a PyTorch MLP with ReLU and a
sigmoid, a Keras-layout `dense_N/kernel` stack with GELU and softmax, one `nn.Linear`), applied by
torch to 8 random unit vectors of width 16. Run with the reference venv:
  /tmp/sieve-ref-venv/bin/python scripts/make_head_fixtures.py
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "heads"
DIM = 16


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(26)
    x = torch.randn(8, DIM, generator=g)
    x = x / x.norm(dim=-1, keepdim=True)
    cases = []

    def add(file, tensors, activation, output, y):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / file))
        cases.append({"file": file, "activation": activation, "output": output, "outputs": y.tolist()})

    torch.manual_seed(26)
    # The LAION improved aesthetic predictor's shape (Linear/Dropout/.../Linear, no activation),
    # narrowed: layers 0, 2, 4, 6, 7 hold weights, 1, 3, 5 are Dropout.
    aes = torch.nn.Sequential(
        torch.nn.Linear(DIM, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 12), torch.nn.Dropout(0.2),
        torch.nn.Linear(12, 10), torch.nn.Dropout(0.1), torch.nn.Linear(10, 4), torch.nn.Linear(4, 1),
    ).eval()
    with torch.no_grad():
        add("aesthetic.safetensors", {f"layers.{k}": v for k, v in aes.state_dict().items()}, "none", "none", aes(x))

    mlp = torch.nn.Sequential(torch.nn.Linear(DIM, 24), torch.nn.ReLU(), torch.nn.Linear(24, 1)).eval()
    with torch.no_grad():
        add("relu_sigmoid.safetensors", {f"net.{k}": v for k, v in mlp.state_dict().items()}, "relu", "sigmoid",
            torch.sigmoid(mlp(x)))

    # Keras Dense layers: kernel [in, out]; names sort naturally (dense_2 before dense_10).
    l1, l2 = torch.nn.Linear(DIM, 20), torch.nn.Linear(20, 3)
    with torch.no_grad():
        y = torch.softmax(l2(torch.nn.functional.gelu(l1(x))), dim=-1)
        add("keras_gelu_softmax.safetensors",
            {"dense_2/kernel": l1.weight.T, "dense_2/bias": l1.bias,
             "dense_10/kernel": l2.weight.T, "dense_10/bias": l2.bias}, "gelu", "softmax", y)

    lin = torch.nn.Linear(DIM, 1)
    with torch.no_grad():
        add("linear.safetensors", {"weight": lin.weight, "bias": lin.bias}, "none", "none", lin(x))

    meta = {"torch": torch.__version__, "inputs": x.tolist(), "heads": cases}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(cases)} heads to {OUT}")


if __name__ == "__main__":
    main()
