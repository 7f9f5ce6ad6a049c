"""Names and numbers shared by the public functions, the CPU and the GPU paths.

Each is defined here once. Kernel modules import the numeric ones at module
level, where Numba freezes them as compile-time constants (never mutate them
at run time).
"""

from __future__ import annotations

# flow types of a class configuration and diffusion modes (SPEC 2.2 - 2.4)
FLOW_TYPES = ("direct", "diffusion", "auto")
DIFFUSION_MODES = ("coordinates", "source", "auto")

# morphology groups of the recovery pipeline and tracking interpolations (SPEC 3)
GROUPS = (1, 2, 3)
INTERPOLATIONS = ("nearest", "trilinear")
# tracking rules: the Euler rule, or the successor graph with pointer jumping
TRACKINGS = ("euler", "jump")
# Euler steps per jump of ``tracking="jump"`` (n_steps <= JUMP_HOP is the Euler rule)
JUMP_HOP = 8

# defaults of `postprocess_single` / of a class without its own recovery settings
POSTPROCESS_DEFAULTS = {"n_steps": 100, "step_size": 1.0, "convergence_radius": 4.0,
                        "min_size": 50}

# diffusion fields are rescaled by an exact power of two every this many iterations
RESCALE_EVERY = 32
# source mode: a unit whose eccentricity reaches this many distance shells keeps
# one power-of-two exponent per band of this many shells
BAND_SHELLS = 128
