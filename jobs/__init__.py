"""What runs inside the container: training loop, models, data, optimizers, probes, journal.

Nothing in this package opens the run registry: jobs report through their journal only.
"""
