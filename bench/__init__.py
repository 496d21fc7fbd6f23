"""Benchmarks (issue 6): not tests.  Each prints one JSON line of figures and a
readable summary; every speed figure is also given as a ratio to a baseline measured
in the same process, so the numbers mean something on any machine.

    python -m bench                 # all of them
    python -m bench core build      # some of them
    vtdtui bench [NAMES]            # the same, from a source checkout
"""
