"""The media benchmark's parts (``python run.py bench media``, orchestrated by
``experiments/bench_media.py``).

C programs, built by the benchmark with ``gcc -O2`` into a temporary directory:

- ``sender.c``: G.711 RTP (12-byte header + 160-byte mu-law payload) to one or many flows, paced
  or blasted, optional RFC 8285 send-time stamp; ``sink.c``: counts, latency from the stamps,
  loss per flow; ``relay.c``: the bare C relay (the ceiling); ``common.h``: what they share.

Python roles, each its own process (``python -m benchmarks.media.<role>``):

- ``uvloop_relay``: the relay's forwarding on uvloop; ``engine_relay``: the MRFP engine as a
  relay (metadata + instruction + mu-law -> A-law); ``mrfp_calls``: the MRFP with N bridges,
  through the Media Processor actor (``mrfp_actor_driver``) or the engine directly.

``programs.py`` builds the C programs and runs any of them as a ``Role`` (ready line, result
line, CPU time); ``role_support.py`` holds what the Python roles share.
"""
