#!/usr/bin/env python3
"""joulebench's task fashion-resnet-mini (models/fashion-resnet-mini.toml) in PyTorch, for `joulebench exec`: the model and
everything else are fashion_resnet.py's, on this task's file by default (the name a suite's
`{task_snake}` and scripts/engines-cpu.sh look for). Same usage and exit status as fashion_resnet.py."""

import sys

import jbtorch
import fashion_resnet

if __name__ == "__main__":
    sys.exit(jbtorch.main("fashion-resnet-mini", "resnet", "fashion-mnist", fashion_resnet.build))
