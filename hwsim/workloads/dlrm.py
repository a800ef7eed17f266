"""A DLRM-like recommender as layer-level ops (Naumov et al. 2019, "Deep Learning Recommendation
Model for Personalization and Recommendation Systems", arXiv 1906.00091).

Dense features go through the bottom MLP; each sparse feature looks up and sum-pools
``lookups_per_table`` rows of its embedding table; the ``dot`` interaction takes the pairwise
dot products of the ``tables + 1`` vectors (a batched GEMM ``Z = X X^T`` per sample, counted in
full), keeps the strictly lower triangle and concatenates the bottom-MLP output; the top MLP
ends in one sigmoid output and a binary cross-entropy loss.

Embedding lookups are memory-bound: ``bytes = batch * tables * lookups * dim * dtype`` of rows
read (plus the pooled outputs written). Tables are model parallel over ``mp_ranks`` (spread
evenly, table-wise): per iteration each rank sends and receives, in one all-to-all each way,
the pooled vectors of its samples, ``batch * tables * dim * dtype`` bytes (``Op.comm =
"mp_alltoall"``; ``extra["alltoall_bytes"]``). The embedding gradient is applied sparsely in the
backward pass (fused, as FBGEMM's table-batched embeddings do), so embeddings add no dense
gradient to the data-parallel all-reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.workloads.memory import storage_bytes
from hwsim.workloads.ops import optimizer_op_bytes
from hwsim.workloads.ops import Block, ModelOps, Op, OpBuilder, dtype_bytes, model_from_blocks

__all__ = ["DLRMSpec", "dlrm_ops", "CRITEO_TERABYTE_ROWS"]

CRITEO_TERABYTE_ROWS = (39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951,
                        2953546, 403346, 10, 2208, 11938, 155, 4, 976, 14, 39979771, 25641295,
                        39664984, 585935, 12972, 108, 36)
"""Rows of the 26 Criteo Terabyte tables with indices capped at 40 M (MLPerf DLRM reference,
facebookresearch/dlrm ``--max-ind-range=40000000``; mlcommons/inference
recommendation/dlrm ``ln_emb``)."""


@dataclass(frozen=True)
class DLRMSpec:
    """DLRM architecture; defaults are the MLPerf Training DLRM on Criteo Terabyte: 13 dense
    features, 26 tables of dim 128, bottom MLP 13-512-256-128, top MLP 479-1024-1024-512-256-1
    (``--arch-mlp-bot``/``--arch-mlp-top`` of facebookresearch/dlrm), one lookup per table."""

    dense_features: int = 13
    table_rows: tuple[int, ...] = CRITEO_TERABYTE_ROWS
    embedding_dim: int = 128
    bottom_mlp: tuple[int, ...] = (512, 256, 128)
    top_mlp: tuple[int, ...] = (1024, 1024, 512, 256, 1)
    lookups_per_table: int = 1
    name: str = "dlrm"

    def __post_init__(self) -> None:
        if self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(f"bottom_mlp must end in embedding_dim={self.embedding_dim} for the "
                             f"dot interaction; got {self.bottom_mlp[-1]}")

    @property
    def interaction_dim(self) -> int:
        """Top-MLP input: pairwise dot products of ``tables + 1`` vectors plus the dense one."""
        n = len(self.table_rows) + 1
        return n * (n - 1) // 2 + self.embedding_dim

    def mlp_dims(self) -> tuple[list[int], list[int]]:
        return ([self.dense_features, *self.bottom_mlp], [self.interaction_dim, *self.top_mlp])

    def params(self) -> float:
        """Embedding rows x dim plus MLP weights and biases."""
        bot, top = self.mlp_dims()
        mlp = sum(a * b + b for dims in (bot, top) for a, b in zip(dims, dims[1:]))
        return sum(self.table_rows) * self.embedding_dim + mlp


def dlrm_ops(spec: DLRMSpec | None = None, *, batch: int, precision: str = "fp32",
             embedding_precision: str = "fp32", mp_ranks: int = 1,
             optimizer: str = "sgd") -> ModelOps:
    """Ops of one rank for a micro-batch of *batch* samples.

    Parameters
    ----------
    spec : DLRMSpec, optional
    batch : int
        Samples of this rank.
    precision, embedding_precision : str
        Of the MLPs and interaction; of the embedding tables (fp32 in the MLPerf reference).
    mp_ranks : int
        Ranks the tables are spread over (1: all tables local, no all-to-all).
    optimizer : str
        Of the dense (MLP) parameters; embeddings get plain sparse SGD, fused in backward.

    Returns
    -------
    ModelOps
        ``blocks``: ``bottom_mlp``, ``embeddings``, ``interaction``, ``top_mlp``;
        ``params`` on this rank (tables / ``mp_ranks`` + MLPs); ``extra``: ``alltoall_bytes``
        (per rank, each direction), ``embedding_params`` (on this rank).
    """
    spec = spec or DLRMSpec()
    if not isinstance(batch, int) or batch < 1 or mp_ranks < 1:
        raise ValueError(f"batch={batch!r} and mp_ranks={mp_ranks!r} must be positive integers")
    mb, vb = dtype_bytes(precision), storage_bytes(precision)
    eb = dtype_bytes(embedding_precision)
    n_t, dim, L = len(spec.table_rows), spec.embedding_dim, spec.lookups_per_table
    opt_prec = "bf16" if vb == 2 else precision
    bot, top = spec.mlp_dims()
    blocks: list[Block] = []

    def mlp(name: str, dims: list[int], first_dgrad: bool, last_act: str) -> Block:
        o = OpBuilder(name, mb, vb)
        params = act = 0.0
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            o.linear(f"dense{i}", batch, a, b, grad_bytes=vb * (a * b + b),
                     dgrad=first_dgrad or i > 0)
            fn = last_act if i == len(dims) - 2 else "relu"
            o.elementwise(f"dense{i}.bias_{fn}", batch * b, 2.0 if fn == "relu" else 5.0, 3.0)
            params += a * b + b
            act += vb * batch * (a + b)
        opt = (Op(f"{name}.{optimizer}", 10 * params,
                  optimizer_op_bytes(params, optimizer, opt_prec)),)
        return Block(name, "mlp", tuple(o.fwd), tuple(o.backward()), opt, params, act)

    blocks.append(mlp("bottom_mlp", bot, False, "relu"))
    # embeddings: this rank's tables for the samples of all mp_ranks (batch * n_t lookups/ L)
    rows_read = batch * n_t * L * dim * eb
    pooled = batch * n_t * dim * eb
    o = OpBuilder("embeddings", mb, eb)
    o.fwd.append(Op("embeddings.lookup", batch * n_t * L * dim, rows_read + pooled
                    + 8.0 * batch * n_t * L))  # + int64 indices
    o.units.append([Op("embeddings.backward_sgd", 2.0 * batch * n_t * L * dim,
                       pooled + 2 * rows_read + 8.0 * batch * n_t * L)])
    if mp_ranks > 1:
        o.comm("mp_alltoall", pooled, name="lookup")
        o.comm("mp_alltoall", pooled, backward=True, name="lookup.grad")
    emb_params = sum(spec.table_rows) * dim / mp_ranks
    blocks.append(Block("embeddings", "embedding", tuple(o.fwd), tuple(o.backward()), (),
                        emb_params, pooled))
    # interaction: Z = X X^T per sample, X = (n_t + 1) x dim; backward dX = (dZ + dZ^T) X
    n = n_t + 1
    zf = 2.0 * batch * n * n * dim
    xb, zb = vb * batch * n * dim, vb * batch * n * n
    fwd = (Op("interaction.bmm", zf, xb + zb, matmul=True),
           Op("interaction.tril_concat", 0.0, zb + vb * batch * spec.interaction_dim))
    bwd = (Op("interaction.tril_concat.grad", 0.0, vb * batch * spec.interaction_dim + zb),
           Op("interaction.bmm.grad", zf, zb + 2 * xb, matmul=True))
    blocks.append(Block("interaction", "interaction", fwd, bwd, (), 0.0, xb))
    blocks.append(mlp("top_mlp", top, True, "sigmoid"))
    o = OpBuilder("loss", mb, vb)
    o.elementwise("bce", batch, 6.0, 2.0)
    blocks.append(Block("loss", "head", tuple(o.fwd), tuple(o.backward())))
    return model_from_blocks(spec.name, blocks, samples=batch,
                             extra={"alltoall_bytes": pooled if mp_ranks > 1 else 0.0,
                                    "embedding_params": emb_params, "spec": spec})
