"""isac: transmit beamforming for integrated sensing and communication.

Layers (arrows point one way only)::

    scenario -> metrics -> solvers / learning -> experiments -> cli

``scenario`` builds geometry, arrays, channels and problem instances;
``metrics`` computes every performance figure (one SINR/rate implementation,
one Fisher-information engine); ``solvers`` share one ``solve(instance) ->
Result`` contract.
"""

__version__ = "0.1.0"
