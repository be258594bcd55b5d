"""The contracts both sides use (docs/): the model package and the one detection path, the
device's MQTT topics and event schema, the device client, atomic file I/O, the frame-quality
check, the SSD networks (and the random-weight package for tests), domain errors.

edge (the device) and control (the laptop) import core and never each other; the shims
(the DeepLens emulation) are built on core alone.
"""
