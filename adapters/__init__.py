"""Outside the runtime package: the simulated platforms, the demo's stories and `yrdx demo` (an entry point)."""
