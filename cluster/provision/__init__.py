"""Provisioning: one pinned llama.cpp build on every host of the inventory (Fabric).

``clusterctl provision`` builds the inventory's ``[build]`` recipe once, on the build host
(the head by default: it has the toolchain for the cluster's GPUs, inside its container
prefix when there is one), copies the files to every host through the controller, checks
each copy's SHA-256 on its host, and only then swaps them into the host's
``llama_bin_dir`` one file at a time, keeping the files it replaced in
``.clusterctl-previous/``. A second run finds every host at the build's digests and
changes nothing. docs/provisioning.md says why it is built this way.

``remote`` reaches a host with Fabric (ssh, host keys verified, no agent forwarding) or
locally; ``plan`` decides per host what to do from digests (pure); ``build`` makes the
build on the build host; ``run`` puts it together and returns one result per host.
"""
