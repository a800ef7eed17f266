"""ZeRO-Offload / ZeRO-Infinity steps of the 3D-parallel job (:mod:`hwsim.jobs.parallel`): the
optimizer step on the host CPU with states in host memory or on the local drive, and parameter
shards fetched from the host before their all-gathers (``offload_params``)."""

from __future__ import annotations

from typing import Generator

import simpy

from hwsim.jobs.communicator import CollectiveGroup
from hwsim.workloads.memory import storage_bytes
from hwsim.workloads.ops import OPTIMIZER_STATE_BYTES

__all__ = ["OffloadSteps"]


class OffloadSteps:
    """Methods of :class:`~hwsim.jobs.parallel.ParallelTrainingJob` for offloaded state."""

    def _offloaded_step(self, step: int, s: int, d: int, shard: int) -> Generator:
        """ZeRO-Offload / ZeRO-Infinity optimizer step of (stage *s*, lane *d*): the reduced
        gradient shard goes to host memory over PCIe; with ``nvme`` the optimizer states are
        read from the server's drive into host memory and written back after; the update runs
        on the server's CPU (one host stream per socket, shared by every rank on it: folded,
        the simulated rank's update takes as long as all of theirs in turn); the updated
        parameters (training precision) go back to the device. Transfers of folded ranks load
        the shared links as peers."""
        plan, env = self.plan, self.env
        params = sum(m.params for m in plan.stages[s]) / shard
        vb = storage_bytes(plan.precision)
        states = params * (OPTIMIZER_STATE_BYTES[plan.optimizer] + (4.0 if vb < 4 else 0.0))
        ranks = [plan.rank(s, d, t) for t in self.tps]

        def move(kind: str, nbytes: float) -> simpy.Event:
            return env.all_of([self._offload_pair(kind, r).join_all(
                (step, kind), nbytes, f"offload.{kind}.step{step}") for r in ranks])
        yield move("grads_d2h", params * vb)
        if plan.offload == "nvme":
            yield move("states_read", states)
        host = {plan.host_nodes[r][1] for r in ranks}
        sharing = (sum(1 for n in plan.host_nodes if n[1] in host) if plan.fold else 1)
        procs = []
        for r in ranks:
            cpu = self.system.device(plan.host_nodes[r][1])
            for model in plan.stages[s]:
                for op in model.optimizer:
                    t = cpu.spec.op_time_s(op.flops / shard, op.bytes / shard, "fp32")
                    procs.append(cpu.host.run(t * sharing, name=op.name, job=plan.job,
                                              rank=r, nbytes=op.bytes / shard,
                                              flops=op.flops / shard, category="host"))
        yield env.all_of(procs)
        if plan.offload == "nvme":
            yield move("states_write", states)
        yield move("params_h2d", params * vb)

    def _fetch_then(self, step: int, s: int, d: int, block, join) -> Generator:
        """ZeRO-Infinity: copy the rank's shard of *block* from host memory (read from the
        drive first with ``nvme``) to the device, then all-gather the block."""
        plan, env = self.plan, self.env
        nbytes = block.params * storage_bytes(plan.precision) / plan.lanes
        ranks = [plan.rank(s, d, t) for t in self.tps]
        kinds = (("params_read",) if plan.offload == "nvme" else ()) + ("params_fetch",)
        for kind in kinds:
            yield env.all_of([self._offload_pair(kind, r).join_all(
                (step, block.name, kind, id(join)), nbytes, f"offload.{kind}.{block.name}")
                for r in ranks])
        yield join()

    def _offload_pair(self, kind: str, r: int) -> CollectiveGroup:
        """The transfer of *kind* for rank *r* (device, host memory, drive), folded over the
        other ranks' identical ones."""
        p = self.plan

        def ends(q: int) -> list[str]:
            dev, (mem, _, disk) = p.devices[q], p.host_nodes[q]
            return {"grads_d2h": [dev, mem], "params_h2d": [mem, dev],
                    "params_fetch": [mem, dev], "params_read": [disk, mem],
                    "states_read": [disk, mem], "states_write": [mem, disk]}[kind]
        return self._point_to_point(("offload", kind, r), r, ends, range(len(p.devices)))
