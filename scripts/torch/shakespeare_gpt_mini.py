#!/usr/bin/env python3
"""joulebench's task shakespeare-gpt-mini (models/shakespeare-gpt-mini.toml) in PyTorch, for `joulebench exec`: the model and
everything else are shakespeare_gpt.py's, on this task's file by default (the name a suite's
`{task_snake}` and scripts/engines-cpu.sh look for). Same usage and exit status as shakespeare_gpt.py."""

import sys

import jbtorch
import shakespeare_gpt

if __name__ == "__main__":
    sys.exit(jbtorch.main("shakespeare-gpt-mini", "gpt", ("shakespeare", "text"), shakespeare_gpt.build))
