"""python -m cluster: the clusterctl command line."""

from cluster.cli.main import run

run()
