"""Fault injection for tests of the training loop: NaN batches and slow steps.

Not a config key: a run's config describes the model and the data, and a fault is a property of
one test process. `jaxdiff.trainer.train(..., faults=FaultInjection(...))` takes them directly;
a `jaxdiff train` subprocess reads them from the environment:

- `JAXDIFF_FAULT_NAN_STEPS="5,9,10"`: 1-based steps (as in `metrics.jsonl`) whose batch images
  are replaced by NaN;
- `JAXDIFF_FAULT_STEP_SLEEP="0.05"`: seconds to wait after each step (a window to interrupt a
  tiny run).

>>> FaultInjection.from_environment({"JAXDIFF_FAULT_NAN_STEPS": "5,6"}).nan_steps
frozenset({5, 6})
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping

from jaxdiff.validation import InputError, check_int

NAN_STEPS_VARIABLE = "JAXDIFF_FAULT_NAN_STEPS"
STEP_SLEEP_VARIABLE = "JAXDIFF_FAULT_STEP_SLEEP"


@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """Faults to inject into a training run.

    nan_steps: 1-based step numbers whose batch images become NaN.
    step_sleep: seconds to wait after each step, in [0, 60].
    """

    nan_steps: frozenset[int] = frozenset()
    step_sleep: float = 0.0

    def __post_init__(self):
        steps = frozenset(check_int(s, "fault injection NaN step", 1) for s in self.nan_steps)
        object.__setattr__(self, "nan_steps", steps)
        sleep = self.step_sleep
        if isinstance(sleep, bool) or not isinstance(sleep, (int, float)) \
                or not math.isfinite(sleep) or not 0 <= sleep <= 60:
            raise InputError(f"fault injection step sleep must be a number of seconds in "
                             f"[0, 60]; got {sleep!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> FaultInjection:
        """Reads JAXDIFF_FAULT_NAN_STEPS (comma-separated steps) and JAXDIFF_FAULT_STEP_SLEEP."""
        environ = os.environ if environ is None else environ
        steps_text = environ.get(NAN_STEPS_VARIABLE, "").strip()
        sleep_text = environ.get(STEP_SLEEP_VARIABLE, "").strip()
        steps = []
        for part in filter(None, (p.strip() for p in steps_text.split(","))):
            try:
                steps.append(int(part))
            except ValueError:
                raise InputError(f"{NAN_STEPS_VARIABLE} must list step numbers >= 1 separated "
                                 f"by commas (e.g. 5,6); got {steps_text!r}") from None
            check_int(steps[-1], f"{NAN_STEPS_VARIABLE} entry", 1)
        try:
            sleep = float(sleep_text) if sleep_text else 0.0
        except ValueError:
            raise InputError(f"{STEP_SLEEP_VARIABLE} must be a number of seconds in [0, 60]; "
                             f"got {sleep_text!r}") from None
        return cls(nan_steps=frozenset(steps), step_sleep=sleep)

    def wrap_step(self, step_fn: Callable) -> Callable:
        """`step_fn(state, batch) -> (state, metrics)` with these faults; itself when none.

        Reads `state.step` on the host (a sync per step): only for tests.
        """
        if not self.nan_steps and not self.step_sleep:
            return step_fn

        def faulty_step(state, batch):
            import jax

            if int(state.step) + 1 in self.nan_steps:
                batch = dict(batch, image=batch["image"] * float("nan"))
            state, metrics = step_fn(state, batch)
            if self.step_sleep:
                jax.block_until_ready(metrics)
                time.sleep(self.step_sleep)
            return state, metrics

        return faulty_step
