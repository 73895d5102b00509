import os
import sys
import tempfile

# Tests run on the CPU; datasets are built into a private folder, never the user's home.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="jaxdiff-tests-tfds-")
sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py
