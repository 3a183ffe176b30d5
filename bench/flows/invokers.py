"""The peer's trivial custom invoker, ported by changing one import."""

import time

from genie_graph import GenieInvoker  # was: from genie_flow_invoker import GenieInvoker


class SleepInvoker(GenieInvoker):
    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    @classmethod
    def from_config(cls, config: dict):
        return cls(float(config.get("delay_s", 1.0)))

    def invoke(self, content: str) -> str:
        time.sleep(self.delay_s)
        return f"(after {self.delay_s}s) {content}"
