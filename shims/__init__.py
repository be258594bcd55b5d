"""A DeepLens on any Linux box: the emulation only, built on core.

The DeepLens names (`awscam`, `mo`, `greengrasssdk`) are thin packages beside this one; what
they share lives here: camera sources (`shims.camera`) and the settings every shim reads from
the environment (`shims.settings`). Models run through core's detection path and runtime.
"""
