"""DataMorph Gateway's benchmark suite: the gateway against the Flask design and the database.

``python -m bench`` (``make bench``) starts what it needs, loads the bench dataset once,
runs every scenario against the gateway (REST through Envoy and native gRPC), the Flask
baseline (``bench/baseline``) and the limit (the same SQL over pooled psycopg2
connections), repeats the cells the targets read, times the bare transport
(``bench/floor.py``), and writes ``bench/results/<date>.json`` and ``docs/benchmarks.md``.
Nothing here is shipped; timings live here and never in a test's assertions.
"""
