"""Array containers shared by the simulator, the policies and the trainer.

All times are in ms RELATIVE TO THE CURRENT SLOT'S GENERATION INSTANT g, so float32 stays exact
however long a run is: a queue's state is its backlog (how long after g it is still busy, >= 0).
Absolute times (for traces) are rebuilt on the host as ``t * slot_ms + relative`` in float64.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EnvState:
    """State carried between slots."""

    t: jnp.ndarray  # () int32: index of the slot about to be played
    radio: jnp.ndarray  # (N,) device radio backlog after g, ms (>= 0)
    es: jnp.ndarray  # (M,) ES backlog after g, ms (>= 0)
    L: jnp.ndarray  # (N, M) bool: links of the current topology
    active: jnp.ndarray  # (N,) bool: active devices of the current topology


@struct.dataclass
class SlotInputs:
    """One slot's random draw (docs/model.md section 2). True values and what the agent sees."""

    s: jnp.ndarray  # (N,) task size, KB
    r: jnp.ndarray  # (N, M) true uplink rate, Mbps
    r_hat: jnp.ndarray  # (N, M) estimated uplink rate, Mbps
    phi: jnp.ndarray  # (M,) available ES capacity in (0, 1]
    eps: jnp.ndarray  # (N,) compute fluctuation factor
    L: jnp.ndarray  # (N, M) bool links
    active: jnp.ndarray  # (N,) bool


@struct.dataclass
class Observation:
    """What a policy may read: observed values only (no true rate, no eps)."""

    s: jnp.ndarray  # (N,) task size, KB
    r_hat: jnp.ndarray  # (N, M) estimated rate, Mbps
    phi: jnp.ndarray  # (M,) capacity
    L: jnp.ndarray  # (N, M) bool
    active: jnp.ndarray  # (N,) bool
    radio: jnp.ndarray  # (N,) radio backlog after g, ms
    es: jnp.ndarray  # (M,) ES backlog after g, ms


@struct.dataclass
class Outcome:
    """What happened to each device's task in one slot (relative ms; NaN where not served)."""

    A: jnp.ndarray  # (N,) arrival at the ES
    S: jnp.ndarray  # (N,) reaches the head of the ES queue
    F: jnp.ndarray  # (N,) finish if run to the end
    latency: jnp.ndarray  # (N,) F - g (equal to F in relative time)
    ok: jnp.ndarray  # (N,) bool: on time
    acc: jnp.ndarray  # (N,) achieved accuracy (0 unless ok)
    has_task: jnp.ndarray  # (N,) bool: active device (a task was generated)
    served: jnp.ndarray  # (N,) bool: the task was sent to a reachable ES
    reward: jnp.ndarray  # () R of eq. 9
    radio_after: jnp.ndarray  # (N,) radio busy-until after this slot's tasks (relative to g)
    es_after: jnp.ndarray  # (M,) ES busy-until after this slot's tasks (relative to g)
