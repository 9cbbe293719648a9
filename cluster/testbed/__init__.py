"""A real multi-host cluster on one machine: network namespaces, veths, tc and sshd.

``bed.create(TestbedSpec(...))`` builds it; see ``bed`` for the layout on disk, ``network``
for the namespaces and links, ``sshd`` for the per-host OpenSSH servers.
"""
