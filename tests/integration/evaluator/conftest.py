import sys
from pathlib import Path

# the child-process helpers of the pipeline tests (real services on free ports) and the
# deploy tests' tool lookup and rule file
for folder in ("consumer", "../deploy"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
