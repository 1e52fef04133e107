"""A traffic simulator that drives compoundry's own scaling policies on a virtual clock (docs/simulation.md).

Pure parts: :mod:`.traffic` (generator), :mod:`.engine` (the clock), :mod:`.policies`,
:mod:`.latency`, :mod:`.run`, :mod:`.analyses`. I/O: :mod:`.scenario` (loading),
:mod:`.trace_io` (trace files, metering replay), :mod:`.report` (markdown + charts).
"""
