"""One process of the two-process test (tests/test_multiprocess.py).

Runs a Q* search (`parallel.jit_rows`) with tensor-parallel models and
four critic training steps with FSDP-sharded parameters, then writes the
results gathered to the host as `<out>/process<id>.npz`. With --num-processes 1 it runs the same work on
one device with no mesh (the reference). The work itself is defined in
tests/scale_workloads.py, shared with tests/test_parallel.py.

  python tests/multiprocess_worker.py --process-id 0 --num-processes 2 \\
      --port 12345 --out DIR        # with JAX_NUM_CPU_DEVICES=2
"""

import argparse
import os

import numpy as np

from scale_workloads import critic_data, flat, search_problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from qstar_jax import distributed
    if args.num_processes > 1:
        address = f"127.0.0.1:{args.port}"
        distributed.initialize(distributed.DistributedConfig(
            coordinator_address=address, coordinator_bind_address=address,
            num_processes=args.num_processes, process_id=args.process_id,
            initialization_timeout_s=120))

    import jax
    from flax import nnx

    from qstar_jax.parallel import (MeshConfig, jit_rows, make_mesh,
                                    replicate, shard_rows, to_host)
    from qstar_jax.partitioning import shard_params
    from qstar_jax.search import qstar_search
    from qstar_jax.training.trainer import train

    vocab = 40
    models, tokens, lengths, keys, stop, config = search_problems(vocab, 4)
    critic, data, loss, train_config = critic_data(vocab)
    if args.num_processes == 1:
        result = jax.jit(qstar_search, static_argnames="config")(
            models, tokens, lengths, keys, stop, config=config)
        run = train(critic, data, loss, train_config, progress=False)
        meta = {}
    else:
        mesh = make_mesh(MeshConfig(data=2, model=2))
        local = {d.process_index for d in mesh.devices[:, 0]}
        search = jit_rows(qstar_search, mesh, static_argnames=("config",))
        result = search(shard_params(models, mesh, "tensor"),
                        *shard_rows((tokens, lengths, keys), mesh),
                        replicate(stop, mesh), config=config)
        tree_rows = result.tree.parent.addressable_shards[0].data.shape[0]
        run = train(critic, data, loss, train_config, progress=False,
                    mesh=mesh, param_layout="fsdp")
        leaf = nnx.state(critic, nnx.Param)["backbone"]["embed"][
            "embedding"][...]
        meta = {"meta.process_count": np.int32(jax.process_count()),
                "meta.tree_rows_per_device": np.int32(tree_rows),
                "meta.data_processes": np.int32(len(local)),
                "meta.embedding_shard_shape": np.array(
                    leaf.addressable_shards[0].data.shape),
                "meta.embedding_fully_addressable": np.bool_(
                    leaf.is_fully_addressable)}
    arrays = flat("search", to_host(result))
    arrays.update(flat("params", to_host(nnx.state(critic, nnx.Param))))
    arrays["loss"] = np.array([r["loss"] for r in run.history])
    arrays.update(meta)
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, f"process{args.process_id}.npz"),
             **arrays)
    distributed.shutdown()
    print("ok")


if __name__ == "__main__":
    main()
