"""Convolutional networks as layer-level ops: bottleneck ResNets from their layer table.

ResNet-50 is He et al. 2016, "Deep Residual Learning for Image Recognition" (arXiv 1512.03385),
Table 1: a 7x7/2 stem conv (64) and 3x3/2 max-pool, four stages of bottleneck blocks
(1x1, 3x3, 1x1 convs; widths 64/128/256/512, expansion 4; 3, 4, 6, 3 blocks), global average
pool and a 1000-way fully connected layer. Version 1.5 (torchvision, NVIDIA
DeepLearningExamples ``resnet50v1.5``) strides the 3x3 conv of a stage's first block instead of
the first 1x1; its forward pass is ~4.1 GMACs = ~8.2 GFLOPs per 224x224 image, 25.56 M
parameters (convs without bias, batch norm scale and shift, the fc layer with bias).

FLOPs: 2 per multiply-add; a conv of ``k x k``, ``c_in -> c_out`` with an ``H x W`` output does
``H*W*c_out*c_in*k*k`` MACs per image. Backward = dgrad + wgrad, each as many FLOPs as the
forward, except the stem's dgrad (the image needs no gradient), as for the MLP. Batch norm,
ReLU, pooling and the residual add are memory-bound elementwise ops. Activations kept for
backward: per conv its output (batch-norm input) and the batch-norm/ReLU output (the next
conv's input), plus the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.workloads.memory import storage_bytes
from hwsim.workloads.ops import optimizer_op_bytes
from hwsim.workloads.ops import Block, ModelOps, Op, OpBuilder, dtype_bytes, model_from_blocks

__all__ = ["ResNetSpec", "resnet_layers", "resnet_ops"]


@dataclass(frozen=True)
class ResNetSpec:
    """A bottleneck ResNet: ``blocks`` per stage (ResNet-50: 3, 4, 6, 3), ``image_size``
    pixels square, ``classes`` outputs, ``stride_in_3x3`` (v1.5) or in the first 1x1 (v1)."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    image_size: int = 224
    classes: int = 1000
    width: int = 64
    stride_in_3x3: bool = True
    name: str = "resnet50"

    def params(self) -> float:
        """Parameters: conv weights, batch-norm scale and shift, fc weight and bias."""
        convs = resnet_layers(self)
        return (sum(c["c_in"] * c["c_out"] * c["k"] ** 2 + 2 * c["c_out"] for c in convs)
                + convs[-1]["c_out"] * self.classes + self.classes)


def _out(size: int, k: int, stride: int) -> int:
    return (size + 2 * (k // 2) - k) // stride + 1


def resnet_layers(spec: ResNetSpec) -> list[dict]:
    """The conv layer table: one dict per conv with ``name``, ``block`` (index of its residual
    block, -1 for the stem), ``k``, ``stride``, ``c_in``, ``c_out``, ``h_out`` (= w_out) and
    ``macs`` per image."""
    rows: list[dict] = []

    def conv(name: str, block: int, k: int, stride: int, c_in: int, c_out: int, size: int) -> int:
        out = _out(size, k, stride)
        rows.append(dict(name=name, block=block, k=k, stride=stride, c_in=c_in, c_out=c_out,
                         h_out=out, macs=out * out * c_out * c_in * k * k))
        return out

    size = conv("stem.conv", -1, 7, 2, 3, spec.width, spec.image_size)
    size = _out(size, 3, 2)  # max-pool 3x3/2
    c_in, b = spec.width, 0
    for stage, n in enumerate(spec.blocks):
        mid = spec.width * 2 ** stage
        for j in range(n):
            stride = 2 if stage > 0 and j == 0 else 1
            s1, s3 = (1, stride) if spec.stride_in_3x3 else (stride, 1)
            p = f"stage{stage + 1}.block{j}"
            a = conv(f"{p}.conv1", b, 1, s1, c_in, mid, size)
            a = conv(f"{p}.conv2", b, 3, s3, mid, mid, a)
            conv(f"{p}.conv3", b, 1, 1, mid, 4 * mid, a)
            if j == 0:
                conv(f"{p}.downsample", b, 1, stride, c_in, 4 * mid, size)
            size, c_in, b = a, 4 * mid, b + 1
    return rows


def resnet_ops(spec: ResNetSpec | None = None, *, batch: int, precision: str = "fp32",
               optimizer: str = "sgd") -> ModelOps:
    """Ops of a ResNet for a micro-batch of *batch* images.

    Returns
    -------
    ModelOps
        ``blocks``: ``stem``, ``block0`` .. (one per residual block), ``head`` (pool, fc, loss);
        ``model_flops`` = 3 x forward conv and fc FLOPs minus the stem's dgrad;
        ``extra["forward_flops_per_sample"]``.
    """
    spec = spec or ResNetSpec()
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r} must be a positive integer")
    mb, vb = dtype_bytes(precision), storage_bytes(precision)
    rows = resnet_layers(spec)
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["block"], []).append(r)
    blocks: list[Block] = []
    opt_prec = "bf16" if vb == 2 else precision
    fwd_flops = 0.0
    for bi, convs in groups.items():
        name = "stem" if bi < 0 else f"block{bi}"
        o = OpBuilder(name, mb, vb)
        params = act = 0.0
        for c in convs:
            out = batch * c["h_out"] ** 2 * c["c_out"]
            w = c["c_in"] * c["k"] ** 2 * c["c_out"]
            fwd_flops += 2 * c["macs"]
            # a conv as a GEMM: m = output pixels, k = c_in*k*k, n = c_out (implicit GEMM)
            o.linear(c["name"].split(".")[-1], out / c["c_out"], c["c_in"] * c["k"] ** 2,
                     c["c_out"], grad_bytes=vb * (w + 2 * c["c_out"]), dgrad=bi >= 0)
            o.elementwise(c["name"].split(".")[-1] + ".bn_relu", out, 6.0, 2.0)
            params += w + 2 * c["c_out"]
            act += 2 * vb * out
        if bi < 0:
            o.elementwise("maxpool", batch * convs[0]["h_out"] ** 2 * spec.width, 9.0, 1.25)
            act += vb * batch * 3 * spec.image_size ** 2
        else:
            last = convs[2]
            o.elementwise("residual_relu", batch * last["h_out"] ** 2 * last["c_out"], 2.0, 3.0)
        blocks.append(Block(name, "stem" if bi < 0 else "block", tuple(o.fwd),
                            tuple(o.backward()),
                            (Op(f"{name}.{optimizer}", 10 * params,
                                optimizer_op_bytes(params, optimizer, opt_prec)),),
                            params, act))
    c_last, hw = rows[-1]["c_out"], rows[-1]["h_out"]
    o = OpBuilder("head", mb, vb)
    o.elementwise("avgpool", batch * hw * hw * c_last, 1.0, 1.0 + 1.0 / (hw * hw))
    o.linear("fc", batch, c_last, spec.classes,
             grad_bytes=vb * (c_last + 1) * spec.classes)
    o.elementwise("softmax_cross_entropy", batch * spec.classes, 5.0, 2.0)
    fwd_flops += 2 * c_last * spec.classes
    head_p = (c_last + 1) * spec.classes
    blocks.append(Block("head", "head", tuple(o.fwd), tuple(o.backward()),
                        (Op(f"head.{optimizer}", 10 * head_p,
                            optimizer_op_bytes(head_p, optimizer, opt_prec)),),
                        head_p, vb * batch * (c_last + spec.classes)))
    return model_from_blocks(spec.name, blocks, samples=batch,
                             extra={"forward_flops_per_sample": fwd_flops, "spec": spec})
