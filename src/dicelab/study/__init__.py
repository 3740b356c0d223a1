"""The randomness study (spec 02): search space, PSO sampler, workers on shared storage, analysis, report."""
