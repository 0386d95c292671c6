"""Config, extension registries, model store, run records, devices and optional imports."""
