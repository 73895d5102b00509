import os
import sys

# Tests run on the CPU unless a test asks otherwise.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py
