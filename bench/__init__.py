"""`ranker bench`: the service's speed against floors measured in the same run.

Everything is measured here, now, on this machine, and reported next to what bounds it:

1. Latency by candidate count (50, 200, 500, 1000) for both models at concurrency 1: client-side
   and server-side p50 and p99 of `POST /rank` on a live `ranker serve` over Redis, next to the
   floors: the ONNX run alone (the same runner, in this process), the Redis fetch alone (one
   MGET of the same keys) and an echo endpoint on the same stack (HTTP + parsing). The ratio is
   the service's server-side p50 over the sum of the floors' p50s.
2. Throughput: open-loop Poisson arrivals at increasing rates with 100-700 candidates per
   request; latency counts from the scheduled send time (no coordinated omission); the highest
   rate whose p99 stays under the objective.
3. The naive path (export/naive.py): the torch model in the request path, one GET per key.
4. ELEC's Table 5 analog: the gain network with the language model online against the vanilla
   network as served, for the same candidates.
5. Memory: the serving process's resident memory with both models, whether torch is mapped into
   it, and Redis bytes per item, user and pair record.

Medians and p99s over many repeats; no result is compared with a number from another run.
"""
