"""Lung nodules on CT: volume input, world coordinates and nodule-centred crops (groundwork)."""
