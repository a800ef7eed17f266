"""The multilayer perceptron: a stack of Dense layers y = act(W x + b), and its special case the
Keras ``Dense(1, activation="sigmoid")`` logistic regression.

Per Dense(n_in -> n_out) layer and batch B (2 FLOPs per multiply-add):
forward matmul 2*B*n_in*n_out; backward dX and dW 2*B*n_in*n_out each (the first layer needs no
dX, so ``model_flops`` = 6*B*sum(n_in*n_out) - 2*B*features*dims[1]); bias add + activation and their gradients are elementwise, memory-bound ops.
The optimizer updates each parameter tensor (weight, bias) with one fused elementwise op.
"""

from __future__ import annotations

from hwsim.workloads.ops import ModelOps, Op, dtype_bytes, optimizer_op_bytes

__all__ = ["mlp_ops"]

# Elementwise FLOPs per element of each activation (forward), a small-count convention: the
# ops are memory-bound so these only need to be of the right order.
_ACT_FLOPS = {"sigmoid": 4.0, "relu": 1.0, "gelu": 8.0, "tanh": 4.0}

def mlp_ops(*, features: int, width: int, depth: int, outputs: int, activation: str,
            batch: int, precision: str = "fp32", optimizer: str = "adam",
            output_activation: str | None = None, loss: str = "cross_entropy") -> ModelOps:
    """Ops of an MLP with *depth* hidden layers of *width* for a micro-batch of *batch*.

    ``depth=0, outputs=1, activation="sigmoid"`` is logistic regression (one Dense layer).
    Returns :class:`ModelOps`; ``params`` = sum of n_in*n_out + n_out over layers.
    """
    if min(features, outputs, batch) < 1 or depth < 0 or (depth > 0 and width < 1):
        raise ValueError("features, outputs, batch must be >= 1, depth >= 0, width >= 1")
    if activation not in _ACT_FLOPS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(_ACT_FLOPS)}")
    b = dtype_bytes(precision)
    dims = [features] + [width] * depth + [outputs]
    out_act = output_activation or (activation if depth == 0 else "sigmoid" if outputs == 1 else "relu")
    fwd: list[Op] = []
    bwd: list[Op] = []
    params = 0.0
    act_bytes = 0.0
    tensors: list[float] = []
    n_layers = len(dims) - 1
    for i in range(n_layers):
        n_in, n_out = dims[i], dims[i + 1]
        act = out_act if i == n_layers - 1 else activation
        mm = 2.0 * batch * n_in * n_out
        params += n_in * n_out + n_out
        tensors += [n_in * n_out, n_out]
        fwd.append(Op(f"dense{i}.matmul", mm, b * (batch * n_in + n_in * n_out + batch * n_out),
                      matmul=True, shape=("gemm", batch, n_out, n_in)))
        fwd.append(Op(f"dense{i}.bias_{act}", batch * n_out * (1 + _ACT_FLOPS[act]),
                      b * (2 * batch * n_out + n_out)))
        act_bytes += b * batch * (n_in + n_out)  # layer input and pre-activation kept
    fwd.append(Op(f"loss.{loss}", 4.0 * batch * outputs, b * 2 * batch * outputs))
    bwd.append(Op(f"loss.{loss}.grad", 2.0 * batch * outputs, b * 3 * batch * outputs))
    for i in reversed(range(n_layers)):
        n_in, n_out = dims[i], dims[i + 1]
        act = out_act if i == n_layers - 1 else activation
        bwd.append(Op(f"dense{i}.{act}_grad", 2.0 * batch * n_out * (1 + _ACT_FLOPS[act]),
                      b * (3 * batch * n_out + n_out)))
        mm = 2.0 * batch * n_in * n_out
        bwd.append(Op(f"dense{i}.matmul_dW", mm, b * (batch * n_in + batch * n_out + n_in * n_out),
                      matmul=True, grad_bytes=b * (n_in * n_out + n_out),
                      shape=("gemm", n_in, n_out, batch)))
        if i > 0:
            bwd.append(Op(f"dense{i}.matmul_dX", mm,
                          b * (batch * n_out + n_in * n_out + batch * n_in), matmul=True,
                          shape=("gemm", batch, n_in, n_out)))
    opt = tuple(Op(f"{optimizer}.update{j}", 10.0 * n, optimizer_op_bytes(n, optimizer, precision))
                for j, n in enumerate(tensors))
    # The first layer's input needs no gradient, so its dX matmul is not run (nor counted).
    model_flops = sum(op.flops for op in fwd + bwd if op.matmul)
    name = "logistic-regression" if depth == 0 and outputs == 1 else f"mlp-{depth}x{width}"
    return ModelOps(name=name, forward=tuple(fwd), backward=tuple(bwd), optimizer=opt,
                    params=params, activation_bytes=act_bytes, model_flops=model_flops,
                    samples=batch)
