import sys, subprocess, time, os
sys.path.insert(0, "/work/main/tests/bench"); sys.path.insert(0, "/work/main/tests/py")
import bench_multiwrite as b, harness
from pathlib import Path
work = Path("/tmp/perfmw/w"); work.mkdir(exist_ok=True)
ext = os.environ["LITESTREAM_EXT"]
print(b.round_(work, ext, 4, 6000, sys.argv[1] == "primary"))
