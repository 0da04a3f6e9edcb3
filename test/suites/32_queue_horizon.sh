#!/usr/bin/env bash
# The event queue under a held xmin horizon: its ring of tables stops growing
# (test/pipeline/queue_horizon.py, about 45 s; bench/soak/run.sh is the long run).
set -u
cd "$KC_ROOT/test/pipeline" || exit 1
/usr/bin/python3 queue_horizon.py || echo "not ok - queue_horizon.py exited with $?"
