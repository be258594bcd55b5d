"""A DeepLens on any Linux box.

The DeepLens names (`awscam`, `mo`, `greengrasssdk`) are thin packages beside this one;
the parts they stand on live here: camera sources (`shims.camera`), the MXNet model
runtime (`shims.runtime`), the model package contract (`shims.package`) and the
settings every shim reads from the environment (`shims.settings`).
"""
