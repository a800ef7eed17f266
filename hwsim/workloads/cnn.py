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
forward, except the stem's dgrad (the image needs no gradient), as for the MLP. Activations kept
for backward: per conv its output (batch-norm input) and the batch-norm/ReLU output (the next
conv's input), plus the image.

Bytes: the kernels PyTorch runs eagerly (torchvision / DeepLearningExamples ResNet: ``Conv2d``,
``BatchNorm2d``, ``ReLU(inplace=True)``, no fusion), each a separate pass over device memory:

- conv (cuDNN implicit GEMM): reads its input tensor and weights, writes its output; dgrad reads
  dY and the weights, writes dX; wgrad reads X and dY, writes dW. The ``k x k`` patches are
  gathered on chip, so the input is read once, not ``k*k`` times (no im2col in memory).
- batch norm, training mode: forward 3 passes (a statistics read, then a read and a write to
  normalise), backward 5 (a reduction reading dY and X, then an elementwise pass reading dY and
  X, writing dX). ReLU: forward read + write, backward reads dY and Y, writes dX. A ReLU follows
  the batch norms of conv1, conv2 and the stem, and the residual add; conv3 and the downsample
  conv feed the add directly.
- residual add: forward reads 2 tensors, writes 1; in backward autograd sums the two branches'
  gradients at the block input (reads 2, writes 1).
- memory format: a Tensor-Core convolution on an NCHW tensor makes cuDNN transpose its
  activations to NHWC and back (cuDNN Developer Guide, "Tensor Core operations": NCHW inputs are
  converted, at a cost), one read and one write of the input and the output of every conv pass
  (forward, dgrad, wgrad). ``ResNetSpec.channels_last=None`` follows NVIDIA DeepLearningExamples
  (``PyTorch/Classification/ConvNets/configs.yml``: ``memory_format: nhwc`` with AMP only): 16-bit
  and fp8 runs are channels-last, fp32/tf32 keep PyTorch's default NCHW. fp32 convolutions run
  on CUDA cores without transposes, so only tf32 pays for them by default.
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
    pixels square, ``classes`` outputs, ``stride_in_3x3`` (v1.5) or in the first 1x1 (v1).
    ``channels_last``: activations in NHWC (True) or NCHW (False); None: channels-last for
    16-bit and fp8 precisions, NCHW for fp32/tf32 (see the module docstring)."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    image_size: int = 224
    classes: int = 1000
    width: int = 64
    stride_in_3x3: bool = True
    channels_last: bool | None = None
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
    block, -1 for the stem), ``k``, ``stride``, ``c_in``, ``c_out``, ``h_in`` and ``h_out``
    (= widths) and ``macs`` per image."""
    rows: list[dict] = []

    def conv(name: str, block: int, k: int, stride: int, c_in: int, c_out: int, size: int) -> int:
        out = _out(size, k, stride)
        rows.append(dict(name=name, block=block, k=k, stride=stride, c_in=c_in, c_out=c_out,
                         h_in=size, h_out=out, macs=out * out * c_out * c_in * k * k))
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


def _tensor_core(precision: str) -> bool:
    """Whether convolutions at *precision* run on Tensor Cores (fp32 runs on CUDA cores)."""
    return precision not in ("fp32", "fp64")


def _conv(o: OpBuilder, name: str, x: float, w: float, y: float, flops: float, *,
          grad_bytes: float, dgrad: bool) -> None:
    """A convolution as cuDNN runs it (implicit GEMM): forward reads X (*x* values) and W (*w*),
    writes Y (*y*); dgrad reads dY and W, writes dX; wgrad reads X and dY, writes dW."""
    mb, vb, p = o.mb, o.vb, o.p
    o.fwd.append(Op(f"{p}.{name}", flops, mb * (x + w) + vb * y, matmul=True))
    bwd = []
    if dgrad:
        bwd.append(Op(f"{p}.{name}.dgrad", flops, mb * (y + w) + vb * x, matmul=True))
    bwd.append(Op(f"{p}.{name}.wgrad", flops, mb * (x + y) + vb * w, matmul=True,
                  grad_bytes=grad_bytes))
    o.units.append(bwd)


def resnet_ops(spec: ResNetSpec | None = None, *, batch: int, precision: str = "fp32",
               optimizer: str = "sgd") -> ModelOps:
    """Ops of a ResNet for a micro-batch of *batch* images.

    Returns
    -------
    ModelOps
        ``blocks``: ``stem``, ``block0`` .. (one per residual block), ``head`` (pool, fc, loss);
        ``model_flops`` = 3 x forward conv and fc FLOPs minus the stem's dgrad;
        ``extra["forward_flops_per_sample"]``, ``extra["channels_last"]``.
    """
    spec = spec or ResNetSpec()
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r} must be a positive integer")
    mb, vb = dtype_bytes(precision), storage_bytes(precision)
    nhwc = spec.channels_last if spec.channels_last is not None else vb <= 2
    transpose = _tensor_core(precision) and not nhwc
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
            inp = batch * c["h_in"] ** 2 * c["c_in"]
            w = c["c_in"] * c["k"] ** 2 * c["c_out"]
            fwd_flops += 2 * c["macs"]
            conv = c["name"].split(".")[-1]
            if transpose:  # NCHW <-> NHWC around every conv pass (dgrad: none for the stem)
                o.elementwise(f"{conv}.nchw_transpose", inp + out, 0.0, 2.0,
                              grad_touches=4.0 if bi >= 0 else 2.0)
            _conv(o, conv, inp, w, out, 2 * c["macs"] * batch, grad_bytes=vb * w,
                  dgrad=bi >= 0)
            o.elementwise(f"{conv}.bn", out, 4.0, 3.0, grad_touches=5.0,
                          grad_bytes=vb * 2 * c["c_out"])
            if conv in ("conv", "conv1", "conv2"):  # conv3 and downsample feed the residual add
                o.elementwise(f"{conv}.relu", out, 1.0, 2.0, grad_touches=3.0)
            params += w + 2 * c["c_out"]
            act += 2 * vb * out
        if bi < 0:
            o.elementwise("maxpool", batch * convs[0]["h_out"] ** 2 * spec.width, 9.0, 1.25)
            act += vb * batch * 3 * spec.image_size ** 2
        else:
            last = convs[2]
            y = batch * last["h_out"] ** 2 * last["c_out"]
            x = batch * convs[0]["h_in"] ** 2 * convs[0]["c_in"]
            # the add reads both branches; its backward is the sum of the two branches'
            # gradients at the block input (x values)
            o.fwd.append(Op(f"{name}.residual_add", y, vb * 3 * y))
            o.units.append([Op(f"{name}.residual_add.grad", x, vb * 3 * x)])
            o.elementwise("relu", y, 1.0, 2.0, grad_touches=3.0)
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
                             extra={"forward_flops_per_sample": fwd_flops, "spec": spec,
                                    "channels_last": nhwc})
