"""llama.cpp builds: the pinned recipe, the local builder, and a build's identity.

``recipe`` says what a build is made from (sdist, CMake options, backend) as pure data;
``sdist`` fetches and unpacks the pinned sources; ``local`` builds into the cache on this
machine (the testbed, the demo, the head during provisioning); ``identity`` names a build
by the digests of its files, which is what "the same build on every host" compares.
"""
