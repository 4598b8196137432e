"""The Flask gateway as its design doc describes it: the benchmark's baseline, never shipped."""
