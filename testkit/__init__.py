"""Support shared by the tests and the benchmarks: waiting on real services, running the app.

Importable from pytest (which runs with the repository root on sys.path) and from
`python -m bench.X` at the repository root. Nothing here imports pytest, so a benchmark can use
it too; a wait that gives up raises `testkit.waiting.WaitTimeout`, an AssertionError.
"""
